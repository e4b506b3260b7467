"""The batch plan and the job folder: inputs -> tasks, and each task's state on disk.

Inputs are files, folders (``recursive``: their sub-folders too), glob patterns (``**`` with
``recursive``) and manifest text files (``.txt``/``.lst``/``.list``: one input per line, relative
paths from the manifest's folder, ``#`` comments). The output tree mirrors the input tree: a file
found in folder ``D`` at ``D/a/b.png`` goes to ``OUTDIR/a/b.png`` (a glob's folder is the part of
the pattern before the first wildcard; a manifest's is the manifest's folder); a file named
directly goes to ``OUTDIR/NAME``.

A task is a plain dict (JSON in plan.json, pickled to the workers): ``id``, ``kind`` ("image" or
"video"), ``src``, ``dst``, ``units`` (progress units: 1 per image, the frame count per video
once known), ``preexisting`` (the output existed when the job was planned: replaced only with
``--overwrite``). Its state file holds ``state`` ("done"/"failed"), ``attempts``, ``worker``,
``seconds``, the output's ``size`` and ``mtime_ns`` (what ``--resume`` checks), or ``error``.
Every file here is written atomically (``atomic_target``).
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_target
from ..media.images import IMAGE_EXTS

JOB_DIR = ".srdeploy-batch"
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv")
MANIFEST_EXTS = (".txt", ".lst", ".list")


@dataclass(frozen=True)
class Settings:
    """Everything that decides an output's content or name; plan.json stores it and ``--resume``
    refuses a different one (outputs of two settings are never mixed in one job)."""

    model: str
    backend: str
    device: str | None
    precision: str | None
    tile: int | str | None
    tile_pad: int | None
    batch: int
    feather: int
    alpha: str
    ext: str | None
    suffix: str
    quality: int | None
    codec: str | None = None
    crf: int | None = None
    segment_frames: int | None = None
    max_memory: int | None = None  # tile "auto" chooses the tiles within this budget: it decides the output


# ----------------------------------------------------------------------------- inputs
def _magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob before its first wildcard (what outputs are made relative to)."""
    parts = Path(pattern).parts
    base = []
    for part in parts[:-1]:
        if _magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _wanted(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS and not p.name.startswith(".")


def _scan(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(f for f in folder.iterdir() if _wanted(f))
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # skips job and video work folders
        found += [Path(root) / f for f in sorted(files) if _wanted(Path(root) / f)]
    return found


def collect(items: list[str], *, recursive: bool = False, _depth: int = 0) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Expand inputs into (file, path relative to the output folder) pairs, in a stable order.

    Returns:
        (pairs, problems): problems are one-line messages for inputs that matched nothing.
    """
    pairs: list[tuple[Path, Path]] = []
    problems: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = _scan(p, recursive)
            if not found:
                problems.append(f"{item}: folder contains no images or videos"
                                + ("" if recursive else " (pass --recursive for its sub-folders)"))
            pairs += [(f, f.relative_to(p)) for f in found]
        elif p.is_file() and p.suffix.lower() in MANIFEST_EXTS:
            if _depth > 4:
                problems.append(f"{item}: manifests nested too deep")
                continue
            try:
                lines = p.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{item}: cannot read the manifest ({exc})")
                continue
            entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            sub, bad = collect([e if os.path.isabs(e) else str(p.parent / e) for e in entries],
                               recursive=recursive, _depth=_depth + 1)
            # mirror relative to the manifest's folder where the file lies under it
            for f, rel in sub:
                try:
                    rel = f.resolve().relative_to(p.parent.resolve())
                except ValueError:
                    pass
                pairs.append((f, rel))
            problems += [f"{item}: {msg}" for msg in bad]
            if not entries:
                problems.append(f"{item}: manifest lists no inputs")
        elif p.exists():
            pairs.append((p, Path(p.name)))
        elif _magic(item):
            base = _glob_base(item)
            found = sorted(Path(f) for f in glob.glob(item, recursive=recursive) if _wanted(Path(f)))
            if not found:
                problems.append(f"{item}: no images or videos match this pattern")
            pairs += [(f, f.relative_to(base) if f.is_relative_to(base) else Path(f.name)) for f in found]
        else:
            problems.append(f"{item}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f, rel in pairs:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((f, rel))
    return unique, problems


def kind_of(path: Path) -> str:
    """"video" by extension, else "image" (an unreadable image fails by name when it runs)."""
    return "video" if path.suffix.lower() in VIDEO_EXTS else "image"


def plan_tasks(pairs: list[tuple[Path, Path]], outdir: Path, settings: Settings) -> tuple[list[dict], list[str]]:
    """Tasks for the inputs: output paths, with clashes and overwrites refused by name.

    Returns:
        (tasks, problems): an input whose output would overwrite an input or another output is a
        problem, not a task.
    """
    ext = settings.ext
    if ext is not None:
        ext = "." + ext.lower().lstrip(".")
        if ext not in IMAGE_EXTS:
            raise ValueError(f"--ext {ext[1:]}: unsupported output format; use one of "
                             + ", ".join(e[1:] for e in IMAGE_EXTS))
    inputs = {f.resolve() for f, _ in pairs}
    taken: dict[Path, Path] = {}
    tasks, problems = [], []
    for f, rel in pairs:
        kind = kind_of(f)
        out_ext = (ext or f.suffix) if kind == "image" else f.suffix
        dst = outdir / rel.parent / f"{rel.stem}{settings.suffix}{out_ext}"
        key = dst.resolve()
        if key in inputs:
            problems.append(f"{f}: output {dst} would overwrite an input; choose another -o folder, --suffix or --ext")
            continue
        if key in taken:
            problems.append(f"{f}: output {dst} is also the output of {taken[key]}; use --suffix or separate runs")
            continue
        taken[key] = f
        tasks.append({"id": f"{len(tasks):06d}", "kind": kind, "src": str(f), "dst": str(dst),
                      "units": 1 if kind == "image" else 0, "preexisting": dst.exists()})
    return tasks, problems


# ----------------------------------------------------------------------------- job folder
def write_json(path: Path, data: Any, *, fsync: bool = True) -> None:
    """JSON written atomically (a reader sees the old or the new file, never half of one)."""
    with atomic_target(path, fsync=fsync) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class JobFolder:
    """``OUTDIR/.srdeploy-batch``: plan.json, tasks/ID.json, summary.json."""

    root: Path

    @classmethod
    def of(cls, outdir: str | os.PathLike) -> "JobFolder":
        return cls(Path(outdir) / JOB_DIR)

    @property
    def plan_file(self) -> Path:
        return self.root / "plan.json"

    def state_file(self, task_id: str) -> Path:
        return self.root / "tasks" / f"{task_id}.json"

    def exists(self) -> bool:
        return self.plan_file.is_file()

    def read_state(self, task_id: str) -> dict | None:
        try:
            return read_json(self.state_file(task_id))
        except (OSError, ValueError):
            return None

    def write_state(self, task_id: str, state: dict) -> None:
        write_json(self.state_file(task_id), state)

    def clear_state(self, task_id: str) -> None:
        self.state_file(task_id).unlink(missing_ok=True)


def output_stamp(path: str | os.PathLike) -> dict:
    """What a done state records of its output, and what ``--resume`` checks."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_finished(job: JobFolder, task: dict) -> bool:
    """Done, and the output is still the one that was written (same size and mtime)."""
    state = job.read_state(task["id"])
    if not state or state.get("state") != "done":
        return False
    try:
        return output_stamp(task["dst"]) == {"size": state.get("size"), "mtime_ns": state.get("mtime_ns")}
    except OSError:
        return False


def open_job(job: JobFolder, settings: Settings, tasks: list[dict], *, resume: bool) -> list[dict]:
    """Create the job folder with its plan, or (``resume``) check the stored plan matches.

    Returns:
        The tasks to use: on resume, the stored ones (their ``preexisting`` flags and video frame
        counts are the first run's).
    """
    record = {"version": 1, "settings": asdict(settings),
              "tasks": [{k: t[k] for k in ("id", "kind", "src", "dst", "units", "preexisting")} for t in tasks]}
    if job.exists():
        if not resume:
            raise FileExistsError(f"{job.root}: an earlier batch job is recorded here; pass --resume to continue it "
                                  "(finished outputs are kept), or delete that folder to start again")
        old = read_json(job.plan_file)
        changed = sorted(k for k in set(old["settings"]) | set(record["settings"])
                         if old["settings"].get(k) != record["settings"].get(k))
        if changed:
            raise ValueError(f"{job.root}: --resume: the recorded job used different {', '.join(changed)}; rerun "
                             "with the same settings, or delete that folder to start again")
        if [(t["src"], t["dst"]) for t in old["tasks"]] != [(t["src"], t["dst"]) for t in tasks]:
            raise ValueError(f"{job.root}: --resume: the inputs differ from the recorded job's "
                             f"({len(old['tasks'])} task(s) recorded, {len(tasks)} now); rerun with the same inputs, "
                             "or delete that folder to start again")
        return old["tasks"]
    job.root.mkdir(parents=True, exist_ok=True)
    write_json(job.plan_file, record)
    return tasks


def update_plan_units(job: JobFolder, units: dict[str, int]) -> None:
    """Record video frame counts (known once a video is probed) in plan.json."""
    plan = read_json(job.plan_file)
    for t in plan["tasks"]:
        if t["id"] in units:
            t["units"] = units[t["id"]]
    write_json(job.plan_file, plan)


@dataclass
class WorkerStats:
    """Per-worker figures for the end report."""

    name: str
    node: str = ""
    pid: int = 0
    tasks: int = 0
    units: int = 0
    failures: int = 0
    busy_s: float = 0.0
    lost: int = 0  # tasks lost because the worker process died
    restarts: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Summary:
    """The job's report (printed, and written by --json and to summary.json)."""

    ok: bool = True
    tasks: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    retries: int = 0
    units: int = 0
    seconds: float = 0.0
    startup_s: float = 0.0
    units_per_s: float = 0.0
    failures: list[dict] = field(default_factory=list)
    workers: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    cluster: dict = field(default_factory=dict)
