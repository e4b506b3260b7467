"""Atomic file replacement, shared by every writer that must never leave a partial file.

``atomic_target`` gives a temporary name beside the destination and renames it on success;
``write_text`` and ``write_json`` are the text and JSON writers built on it.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def occupied(path: str | os.PathLike) -> bool:
    """Whether ``path`` names something, a dangling symlink included (``Path.exists`` follows links,
    so a link to nowhere would count as free and be replaced without ``--overwrite``).

    Args:
        path: an output path about to be written.
    """
    return os.path.lexists(path)


@contextmanager
def atomic_target(path: str | os.PathLike, *, fsync: bool = True, keep_suffix: bool = False,
                  overwrite: bool = True, create: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it to ``path``.

    The temporary file lives in the destination folder (so the rename is atomic on one
    filesystem), is hidden (``.NAME.XXXX.tmp``) and gets the permissions a plain ``open()`` would
    give (mkstemp makes 0600). On any error, KeyboardInterrupt and SIGTERM (which the CLI turns
    into KeyboardInterrupt) included, it is removed and ``path`` is left as it was.

    Args:
        path: the destination.
        fsync: flush the file to disk before the rename.
        keep_suffix: end the temporary name with ``path``'s extension (``.NAME.XXXX.tmp.png``), for
            writers that choose the format from it (OpenCV, ffmpeg, matplotlib).
        overwrite: replace an existing ``path``; False raises FileExistsError instead, also when
            ``path`` appeared while the file was being written (a hard link, not a rename, makes
            the final step fail rather than clobber).
        create: create the (empty) temporary file; False only reserves a fresh name, for writers
            that refuse to open an existing file.
    """
    path = Path(path)
    if not overwrite and occupied(path):
        raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:  # a read-only folder: say so of the output, not of a random hidden name
        raise _about(exc, path) from exc
    os.close(fd)
    tmp = Path(name)
    if not create:
        tmp.unlink()
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
    except OSError as exc:
        # A failed write (disk full: errno and no file name) or a failure on the temporary file is
        # the output's failure; errors about other files keep their own names.
        if exc.errno is not None and exc.filename in (None, str(tmp)):
            raise _about(exc, path) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _about(exc: OSError, path: Path) -> OSError:
    """``exc`` (same type and errno) restated about ``path``: "[Errno 28] No space left on device: 'out.png'"."""
    return type(exc)(exc.errno, exc.strerror, str(path))


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` unless ``path`` exists (atomic where hard links work)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it") from None
    except OSError:  # filesystems without hard links
        if occupied(path):
            raise FileExistsError(f"{path}: already exists; pass --overwrite to replace it") from None
        os.replace(tmp, path)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically: a reader sees the old file or the new one."""
    with atomic_target(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: object, *, indent: int = 1, fsync: bool = True) -> None:
    """Write ``data`` as JSON (one trailing newline) to ``path`` atomically; the one JSON writer.

    Args:
        path: the destination.  data: anything ``json.dumps`` takes.
        indent: JSON indentation.  fsync: flush to disk before the rename.
    """
    import json

    write_text(path, json.dumps(data, indent=indent) + "\n", fsync=fsync)
