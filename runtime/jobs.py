"""A resumable job's truth on disk: its record, the settings check, task states.

Two commands resume work: ``srdeploy video --resume`` (segments in ``.OUT.srdeploy-video/``,
record ``job.json``) and ``srdeploy batch --resume`` (``OUTDIR/.srdeploy-batch/``, record
``plan.json`` and one state file per task in ``tasks/``). Both keep a job folder that works the
same way:

* **The record** says what the outputs are made from (source, model fingerprint, encoder and
  tile settings, the task list). The first run writes it; a later run compares its own record
  with the stored one (``JobFolder.pin``) and refuses, naming every setting that changed, rather
  than mix outputs of two settings in one job.
* **Task states** (``tasks/ID.json``): done (with the output's size and mtime, so a resumed job
  trusts an output only while it is the one that was written; or with its sha256, checked on
  reuse, for outputs a later step reads back, such as video segments) or failed (with the error).
* **The lock** (``lock`` in the folder, ``JobFolder.lock``): one process owns a job folder for
  the whole run, through ``fcntl.flock``. A second job on the same folder is refused at once,
  naming the process that holds it; the kernel drops the lock when its holder dies (SIGKILL, a
  crash), so a dead job never blocks ``--resume``. The file's content (pid, command) is only
  for that message: a stale one is overwritten, never trusted.

Every file is written atomically (``atomic.write_json``); a killed run leaves the old file or
the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .atomic import write_json
from .metadata import sha256_file

DONE, FAILED = "done", "failed"
LOCK_FILE = "lock"


class JobLocked(RuntimeError):
    """Another process holds the job folder (``JobFolder.lock``).

    Attributes:
        holder: what the holder wrote into the lock file (pid, host, command, started), or {}.
    """

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file written by ``atomic.write_json``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def as_stored(record: dict) -> dict:
    """``record`` as it reads back from its JSON file (tuples become lists), so a fresh record
    compares equal to the stored one when nothing changed."""
    return json.loads(json.dumps(record))


def changed_keys(old: dict, new: dict) -> list[str]:
    """The keys whose values differ between two records (a key missing on one side counts), sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def model_fingerprint(upscaler, model: str | os.PathLike) -> dict:
    """What decides a job's pixels besides its inputs and encoder: the model's content and the
    session and tile settings (stored in the record, so ``--resume`` refuses another model or tiling).

    The model is identified by the sha256 of its files (``model_sha256``), not by its path, size
    or mtime: another model copied over the same path with the same size is refused too. Hashing
    costs about 4 ms for the bundled 6 MB model (1.4 GB/s with SHA-NI, see docs/video.md).

    Args:
        upscaler: the ``Upscaler`` (its session's backend and precision, its tile settings).
        model: the model file the session was opened from.
    """
    session = upscaler.session
    return {"model": str(os.path.abspath(model)), "model_size": os.path.getsize(model),
            "model_sha256": model_sha256(model), "backend": session.backend, "precision": session.precision,
            "tile": upscaler.tile, "tile_pad": upscaler.tile_pad}


def model_files(model: str | os.PathLike) -> list[Path]:
    """The files whose bytes make a model: the file itself, the ``.bin`` weights of an OpenVINO
    ``.xml``, the external-data files an ``.onnx`` names (read from the protobuf's ``location``
    entries, so the onnx package is not needed)."""
    path = Path(model)
    files = [path]
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        files.append(path.with_suffix(".bin"))
    elif path.suffix.lower() == ".onnx":
        files += [path.parent / name for name in _onnx_external_names(path) if (path.parent / name).is_file()]
    return files


# A TensorProto's external_data entry: key "location" (field 1, 8 bytes), value (field 2) of one
# length byte (names under 128 bytes, which covers every exporter's naming).
_LOCATION = re.compile(rb"\x0a\x08location\x12([\x01-\x7f])")


def _onnx_external_names(path: Path) -> list[str]:
    """Relative file names an ONNX file stores its external tensors in (sorted, no duplicates)."""
    data = path.read_bytes()
    names = set()
    for m in _LOCATION.finditer(data):
        raw = data[m.end():m.end() + m.group(1)[0]]
        try:
            names.add(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return sorted(names)


def model_sha256(model: str | os.PathLike) -> str:
    """sha256 over the model's files (``model_files``), each file's own hash in order."""
    files = model_files(model)
    return _files_sha256(tuple((str(f), *_stat_key(f)) for f in files))


def _stat_key(path: Path) -> tuple[int, int, int, int]:
    """What changes whenever a file's bytes may have: the ctime too, which no one can set back."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@lru_cache(maxsize=16)
def _files_sha256(files: tuple[tuple, ...]) -> str:
    """Hash once per process per file version (a batch plans many videos with one model); several
    files: the sha256 of their hashes, one a line."""
    hashes = [sha256_file(f[0]) for f in files]
    return hashes[0] if len(hashes) == 1 else hashlib.sha256("\n".join(hashes).encode("ascii")).hexdigest()


def output_stamp(path: str | os.PathLike) -> dict:
    """What a done state records of its output, and what ``is_finished`` checks."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _holder_line(holder: dict) -> str:
    """The process a lock file names, for the refusal: "pid 123 on host (srdeploy video ...), since 12:00:01"."""
    if not holder.get("pid"):
        return "another process (it has not written its name yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) if holder.get("started") else "?"
    command = " ".join(str(holder.get("command", "?")).split())  # one line whatever the names hold
    return f"pid {holder['pid']} on {holder.get('host', '?')} ({command}), since {since}"


def _this_process() -> dict:
    """pid, host, command line and start time, for another job's refusal (``_holder_line``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # python -m srdeploy: argv[0] is the package's __main__.py
        program = f"python -m {spec.name.removesuffix('.__main__')}"
    else:
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    argv = [program, *sys.argv[1:]]
    command = " ".join([argv[0], *(shlex.quote(a) for a in argv[1:])]).encode("unicode_escape").decode("ascii")
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}


@dataclass(frozen=True)
class JobFolder:
    """A job folder: the record file and ``tasks/ID.json`` states.

    Args:
        root: the folder.
        record_name: the record's file name ("job.json" for a video, "plan.json" for a batch).
    """

    root: Path
    record_name: str = "job.json"

    @property
    def record_file(self) -> Path:
        return self.root / self.record_name

    def exists(self) -> bool:
        """Whether an earlier run recorded a job here."""
        return self.record_file.is_file()

    def read_record(self) -> dict:
        return read_json(self.record_file)

    def write_record(self, record: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.record_file, record)

    @property
    def lock_file(self) -> Path:
        return self.root / LOCK_FILE

    @contextmanager
    def lock(self, what: str) -> Iterator[None]:
        """Own the folder (created if missing) for the block: an exclusive ``flock`` on ``lock``.

        Never waits: a folder another live process holds is refused at once. The kernel releases
        the lock when the holder exits or dies, so a lock file left by a dead job blocks nothing;
        its content is overwritten. A holder may remove the whole folder when it finishes (a
        joined video): a lock then taken on the removed file is dropped and taken again on a new one.

        Args:
            what: the start of the refusal ("OUT", the output the job writes).

        Raises:
            JobLocked: another process holds it (one line: its pid, host, command, start time).
        """
        fd = self._acquire(what)
        try:
            holder = json.dumps(_this_process()).encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder, 0)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _acquire(self, what: str) -> int:
        """The locked file descriptor of ``lock_file`` (see ``lock``)."""
        while True:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            if not _flock(fd, fcntl.LOCK_EX):
                self._refuse(what, fd)
            try:
                current = os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                return fd
            os.close(fd)  # the holder removed the folder as we took the lock: take it on the new file

    def check_free(self, what: str) -> None:
        """Refuse now, as ``lock`` would, when a live process holds the folder; creates and writes
        nothing (a command calls it before its slow start, such as opening a model, and takes
        the lock itself later).

        Raises:
            JobLocked: another process holds it.
        """
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, PermissionError):  # no job yet; or not ours to read: ``lock`` says so
            return
        if not _flock(fd, fcntl.LOCK_SH):
            self._refuse(what, fd)
        os.close(fd)  # releases the shared lock

    def _refuse(self, what: str, fd: int) -> None:
        """Close ``fd`` and raise JobLocked naming the process the lock file names."""
        holder = _read_holder(fd)
        for _ in range(20):  # the holder writes its name right after taking the lock
            if holder:
                break
            time.sleep(0.025)
            holder = _read_holder(fd)
        os.close(fd)
        raise JobLocked(f"{what}: another job is writing it: {_holder_line(holder)}; wait for it to finish "
                        f"or stop it (its work folder is {self.root})", holder)

    def pin(self, record: dict, *, refusal: str, hint: str, part: str | None = None) -> dict:
        """Store ``record`` (first run) or check it against the stored one (a later run).

        Args:
            record: this run's record (JSON-able).
            refusal: the start of the error, e.g. "OUT: --resume: the unfinished run in WORK was made
                with"; " different A, B; HINT" follows.
            hint: what to do instead (rerun with the same settings, delete the folder).
            part: compare only this key of the records (batch: "settings"; its task list is
                checked by the caller); None compares the whole records.

        Returns:
            The stored record (this run's on a first run).

        Raises:
            ValueError: the stored record differs; the message lists every changed key.
        """
        record = as_stored(record)
        if not self.exists():
            self.write_record(record)
            return record
        old = self.read_record()
        changed = changed_keys(old.get(part, {}), record.get(part, {})) if part else changed_keys(old, record)
        if changed:
            raise ValueError(f"{refusal} different {', '.join(changed)}; {hint}")
        return old

    # ------------------------------------------------------------------ task states
    def state_file(self, task_id: str) -> Path:
        return self.root / "tasks" / f"{task_id}.json"

    def read_state(self, task_id: str) -> dict | None:
        """A task's state, or None (never run, or an unreadable file: the task runs again)."""
        try:
            return read_json(self.state_file(task_id))
        except (OSError, ValueError):
            return None

    def write_state(self, task_id: str, state: dict) -> None:
        write_json(self.state_file(task_id), state)

    def clear_state(self, task_id: str) -> None:
        self.state_file(task_id).unlink(missing_ok=True)

    def mark_done(self, task_id: str, output: str | os.PathLike, *, checksum: bool = False, **fields) -> None:
        """Record a task as done right after its output was written (``fields``: attempts, worker...).

        Args:
            checksum: also record the output's sha256, which ``is_finished`` then checks instead of
                the mtime (for outputs a later step reads back: a damaged one must be redone).
        """
        stamp = output_stamp(output)
        if checksum:
            stamp["sha256"] = sha256_file(output)
        self.write_state(task_id, {"state": DONE, **fields, **stamp})

    def mark_failed(self, task_id: str, error: str, attempts: int) -> None:
        self.write_state(task_id, {"state": FAILED, "attempts": attempts, "error": error})

    def is_finished(self, task_id: str, output: str | os.PathLike) -> bool:
        """Done, and the output is still the one that was written: same size and sha256 when the
        state has one (the bytes, whatever the mtime), else same size and mtime."""
        state = self.read_state(task_id)
        if not state or state.get("state") != DONE:
            return False
        try:
            stamp = output_stamp(output)
            if "sha256" in state:
                return stamp["size"] == state.get("size") and sha256_file(output) == state["sha256"]
            return stamp == {"size": state.get("size"), "mtime_ns": state.get("mtime_ns")}
        except OSError:
            return False


def _flock(fd: int, kind: int, tries: int = 10) -> bool:
    """Take ``kind`` (LOCK_EX, LOCK_SH) on ``fd`` without blocking; False when someone holds it.
    A few tries 20 ms apart: another command's ``check_free`` holds a shared lock for an instant,
    a real holder for its whole run."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.02)
    return False


def _read_holder(fd: int) -> dict:
    """The lock file's content: the holder's pid, host, command and start (``{}`` while it has
    not written them, or if the file holds anything else)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
