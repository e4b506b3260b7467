"""Inputs and outputs of the file commands: which files an ``-i`` names, and what each output is called.

One set of rules for ``srdeploy upscale``, ``video`` and ``batch``:

* **Extensions.** ``IMAGE_EXTS`` are the images OpenCV reads and writes; ``VIDEO_EXTS`` the
  video containers the commands read, each of which ``srdeploy video`` also writes (the ffmpeg
  container table, ``media.ffmpeg.codecs.CONTAINERS``, has one entry per extension here);
  ``MANIFEST_EXTS`` the text files that list inputs (batch).
* **Inputs** (``collect``): a file named directly is taken whatever its extension (an unreadable
  one fails later, by name), unless it is of a kind the command does not do (a video given to
  ``upscale``). A folder gives its files with a wanted extension (``recursive``: its
  sub-folders too, hidden ones skipped); a glob pattern gives the matching files with a wanted
  extension (``**`` with ``recursive``); a manifest gives the inputs it lists, one a line,
  relative to the manifest's folder, ``#`` comments. Hidden files are never collected from a
  folder or a glob (work folders and temporary files are hidden), nor is anything in the
  command's own output folder where it lies inside a scanned folder or below a glob's folder
  (``exclude``: a rerun must not take the first run's outputs as inputs).
* **Output names** mirror the input tree: a file found in folder ``D`` at ``D/a/b.png`` goes to
  ``OUTDIR/a/b.png`` (a glob's folder is the part of the pattern before the first wildcard; a
  manifest's is the manifest's folder); a file named directly goes to ``OUTDIR/NAME``. The name
  gets ``--suffix`` before the extension, and images ``--ext``'s format. An output that would
  replace an input, or that two inputs would share, is refused by name (``output_problem``).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".wmv",
              ".flv")
MANIFEST_EXTS = (".txt", ".lst", ".list")
_KINDS = {"image": IMAGE_EXTS, "video": VIDEO_EXTS}
_NOUNS = {("image",): "images", ("video",): "videos", ("image", "video"): "images or videos"}
# Where a named input of a kind the command does not do belongs instead.
_ELSEWHERE = {"video": "is a video; upscale it with `srdeploy video -i {item} -o OUT`",
              "image": "is an image; upscale it with `srdeploy upscale -i {item} -o OUT`"}
_MAX_MANIFEST_DEPTH = 4

Pairs = list[tuple[Path, Path]]


def has_wildcards(text: str) -> bool:
    """Whether ``text`` is a glob pattern (``*``, ``?`` or ``[``) rather than a path."""
    return any(c in text for c in "*?[")


def kind_of(path: str | os.PathLike) -> str:
    """"video" by extension, else "image" (an unreadable image fails by name when it runs)."""
    return "video" if Path(path).suffix.lower() in VIDEO_EXTS else "image"


def glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (what outputs are made relative to)."""
    base = []
    for part in Path(pattern).parts[:-1]:
        if has_wildcards(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def collect(items: list[str], *, kinds: tuple[str, ...] = ("image", "video"), recursive: bool | None = None,
            manifests: bool = False, exclude: str | os.PathLike | None = None) -> tuple[Pairs, list[str]]:
    """Expand inputs into (file, path relative to the output folder) pairs, in a stable order, each file once.

    Args:
        items: files, folders, glob patterns (and manifests with ``manifests``).
        kinds: what the command does: ("image",), ("video",) or both.
        recursive: take sub-folders (and ``**`` in globs); None = the command has no such
            option (so no message suggests one).
        manifests: read ``MANIFEST_EXTS`` files as lists of inputs.
        exclude: the output folder: skipped where it lies strictly inside a folder or below a glob's
            folder (where it is that folder or above it, it holds the inputs themselves); files
            named directly are always taken.

    Returns:
        (pairs, problems): problems are one-line messages for inputs that matched nothing.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    pairs, problems = _collect(items, kinds, bool(recursive), manifests, 0, hint=recursive is False, skip=skip)
    seen: set[Path] = set()
    unique = []
    for f, rel in pairs:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    return unique, problems


def _collect(items: list[str], kinds: tuple[str, ...], recursive: bool, manifests: bool, depth: int, *,
             hint: bool, skip: Path | None = None) -> tuple[Pairs, list[str]]:
    noun = _NOUNS[tuple(sorted(kinds))]
    exts = tuple(e for k in kinds for e in _KINDS[k])
    pairs: Pairs = []
    problems: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = _scan(p, exts, recursive, _below(skip, p))
            if not found:
                problems.append(f"{item}: folder contains no {noun} ({', '.join(exts)})"
                                + (" (pass --recursive for its sub-folders)" if hint else ""))
            pairs += [(f, f.relative_to(p)) for f in found]
        elif manifests and p.is_file() and p.suffix.lower() in MANIFEST_EXTS:
            found, bad = _manifest(p, item, kinds, recursive, depth, hint=hint, skip=skip)
            pairs += found
            problems += bad
        elif p.exists():
            kind = kind_of(p)
            if kind not in kinds:
                problems.append(f"{item}: " + _ELSEWHERE[kind].format(item=item))
                continue
            pairs.append((p, Path(p.name)))
        elif has_wildcards(item):
            base = glob_base(item)
            out = _below(skip, base)
            found = sorted(Path(f) for f in glob.glob(item, recursive=recursive)
                           if _wanted(Path(f), exts) and not (out and Path(f).resolve().is_relative_to(out)))
            if not found:
                problems.append(f"{item}: no {noun} match this pattern")
            pairs += [(f, f.relative_to(base) if f.is_relative_to(base) else Path(f.name)) for f in found]
        else:
            problems.append(f"{item}: no such file or folder")
    return pairs, problems


def _wanted(p: Path, exts: tuple[str, ...]) -> bool:
    return p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")


def _below(skip: Path | None, folder: Path) -> Path | None:
    """``skip`` (resolved) when it lies strictly inside ``folder``, else None."""
    if skip is None:
        return None
    top = folder.resolve()
    return skip if skip != top and skip.is_relative_to(top) else None


def _scan(folder: Path, exts: tuple[str, ...], recursive: bool, skip: Path | None = None) -> list[Path]:
    if not recursive:
        return sorted(f for f in folder.iterdir() if _wanted(f, exts))
    found = []
    for root, dirs, files in os.walk(folder):
        # Hidden ones are job and video work folders; ``skip`` is the command's output folder.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and not (skip and (Path(root) / d).resolve() == skip))
        found += [Path(root) / f for f in sorted(files) if _wanted(Path(root) / f, exts)]
    return found


def _manifest(p: Path, item: str, kinds: tuple[str, ...], recursive: bool, depth: int, *,
              hint: bool, skip: Path | None = None) -> tuple[Pairs, list[str]]:
    """The inputs a manifest lists, mirrored relative to the manifest's folder where they lie under it."""
    if depth > _MAX_MANIFEST_DEPTH:
        return [], [f"{item}: manifests nested too deep"]
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [f"{item}: cannot read the manifest ({exc})"]
    entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    sub, bad = _collect([e if os.path.isabs(e) else str(p.parent / e) for e in entries], kinds, recursive, True,
                        depth + 1, hint=hint, skip=skip)
    pairs: Pairs = []
    for f, rel in sub:
        try:
            rel = f.resolve().relative_to(p.parent.resolve())
        except ValueError:
            pass
        pairs.append((f, rel))
    problems = [f"{item}: {msg}" for msg in bad]
    if not entries:
        problems.append(f"{item}: manifest lists no inputs")
    return pairs, problems


# ----------------------------------------------------------------------------- output names
def image_ext(ext: str | None) -> str | None:
    """``--ext`` as ".png"-style, or None; an extension OpenCV cannot write is refused."""
    if ext is None:
        return None
    ext = "." + ext.lower().lstrip(".")
    if ext not in IMAGE_EXTS:
        raise ValueError(f"--ext {ext[1:]}: unsupported output format; use one of "
                         + ", ".join(e[1:] for e in IMAGE_EXTS))
    return ext


def output_name(src: Path, rel: Path, outdir: str | os.PathLike, *, suffix: str = "", ext: str | None = None) -> Path:
    """``OUTDIR/<rel's folder>/<stem><suffix><ext>``: an image gets ``ext`` (``image_ext``) when
    given, a video keeps its container."""
    out_ext = ext if ext is not None and kind_of(src) == "image" else src.suffix
    return Path(outdir) / rel.parent / f"{rel.stem}{suffix}{out_ext}"


def output_problem(src: Path, dst: Path, inputs: set[Path], taken: dict[Path, Path]) -> str | None:
    """Why ``dst`` must not be written for ``src`` (one line), or None; records it in ``taken``.

    Args:
        src, dst: an input and its output.
        inputs: every input of the run, resolved (no output may replace one).
        taken: resolved outputs so far -> their input (updated when ``dst`` is fine).
    """
    key = dst.resolve()
    if key == src.resolve():
        return f"{src}: output {dst} would overwrite the input; choose another -o folder, --suffix or --ext"
    if key in inputs:
        return f"{src}: output {dst} would overwrite an input; choose another -o folder, --suffix or --ext"
    if key in taken:
        return f"{src}: output {dst} is also the output of {taken[key]}; use --suffix or separate runs"
    taken[key] = src
    return None


def plan_outputs(pairs: Pairs, outdir: str | os.PathLike, *, suffix: str = "",
                 ext: str | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, output) for each pair, mirroring the input tree; clashes are problems, not outputs.

    Returns:
        (planned, problems).
    """
    ext = image_ext(ext)
    inputs = {f.resolve() for f, _ in pairs}
    taken: dict[Path, Path] = {}
    planned, problems = [], []
    for f, rel in pairs:
        dst = output_name(f, rel, outdir, suffix=suffix, ext=ext)
        problem = output_problem(f, dst, inputs, taken)
        if problem:
            problems.append(problem)
        else:
            planned.append((f, dst))
    return planned, problems


def output_paths(pairs: Pairs, output: str | os.PathLike, *, ext: str | None, suffix: str,
                 single_item: bool) -> dict[Path, Path]:
    """``srdeploy upscale``'s outputs: into the folder ``output``, or the file ``output`` when one
    input file was named and ``output`` has an image extension (see the ``-o`` help).

    Clashes are checked as each file runs (``output_problem``), so one bad name fails one file.
    """
    out = Path(output)
    ext = image_ext(ext)
    if single_item and len(pairs) == 1 and out.suffix.lower() in IMAGE_EXTS and not out.is_dir():
        if ext is not None and ext != out.suffix.lower():
            raise ValueError(f"-o {out} has extension {out.suffix} but --ext says {ext}; drop one of them")
        return {pairs[0][0]: out}
    if out.suffix.lower() in IMAGE_EXTS and not out.is_dir():
        raise ValueError(f"-o {out}: an output file name needs exactly one input file ({len(pairs)} given, or a "
                         "folder/glob); give an output folder instead")
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out}: exists and is not a folder (a single output file needs exactly one "
                         "input file and an image extension)")
    return {f: output_name(f, rel, out, suffix=suffix, ext=ext) for f, rel in pairs}
