"""The batch plan and the job folder: inputs -> tasks, and each task's state on disk.

Inputs (files, folders, globs, manifests) and output names follow ``media.files`` (the rules of
every file command): the output tree mirrors the input tree, and an output that would replace an
input or that two inputs share is refused by name.

A task is a plain dict (JSON in plan.json, pickled to the workers): ``id``, ``kind`` ("image" or
"video"), ``src``, ``dst``, ``units`` (progress units: 1 per image, the frame count per video
once known), ``preexisting`` (the output existed when the job was planned: replaced only with
``--overwrite``). The job folder is a ``jobs.JobFolder``: plan.json is its record (the settings,
which ``--resume`` compares, and the tasks), ``tasks/ID.json`` the states ("done" with the
output's ``size`` and ``mtime_ns``, which ``--resume`` checks, or "failed" with ``error``).
Every file here is written atomically (``atomic.write_json``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import occupied
from ..jobs import JobFolder
from ..media.files import kind_of, plan_outputs

JOB_DIR = ".srdeploy-batch"
PLAN_FILE = "plan.json"


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
    # the model's content (``jobs.model_sha256``): another model copied over the same path is refused on --resume
    model_sha256: str | None = None


def plan_tasks(pairs: list[tuple[Path, Path]], outdir: Path, settings: Settings) -> tuple[list[dict], list[str]]:
    """Tasks for the inputs (``media.files.collect``'s pairs): output paths, with clashes refused by name.

    Returns:
        (tasks, problems): an input whose output would overwrite an input or another output is a
        problem, not a task.
    """
    planned, problems = plan_outputs(pairs, outdir, suffix=settings.suffix, ext=settings.ext)
    tasks = []
    for f, dst in planned:
        kind = kind_of(f)
        tasks.append({"id": f"{len(tasks):06d}", "kind": kind, "src": str(f), "dst": str(dst),
                      "units": 1 if kind == "image" else 0, "preexisting": occupied(dst)})
    return tasks, problems


# ----------------------------------------------------------------------------- job folder
def job_folder(outdir: str | os.PathLike) -> JobFolder:
    """``OUTDIR/.srdeploy-batch``: plan.json, tasks/ID.json, summary.json."""
    return JobFolder(Path(outdir) / JOB_DIR, PLAN_FILE)


def check_job(job: JobFolder, settings: Settings, tasks: list[dict], *, resume: bool) -> tuple[list[dict], dict]:
    """Check the job folder against this run, writing nothing (``start_job`` writes the plan).

    Returns:
        (tasks, record): the tasks to use (on resume, the stored ones: their ``preexisting``
        flags and video frame counts are the first run's) and the plan ``start_job`` records.

    Raises:
        FileExistsError: a job is recorded here and ``resume`` is off.
        ValueError: ``resume`` with other settings or inputs than the recorded job's.
    """
    record = {"version": 1, "settings": asdict(settings),
              "tasks": [{k: t[k] for k in ("id", "kind", "src", "dst", "units", "preexisting")} for t in tasks]}
    if not job.exists():
        return tasks, record
    if not resume:
        raise FileExistsError(f"{job.root}: an earlier batch job is recorded here; pass --resume to continue it "
                              "(finished outputs are kept), or delete that folder to start again")
    stored = _pin(job, record)  # a plan is stored: this only compares
    if [(t["src"], t["dst"]) for t in stored["tasks"]] != [(t["src"], t["dst"]) for t in tasks]:
        raise ValueError(f"{job.root}: --resume: the inputs differ from the recorded job's "
                         f"({len(stored['tasks'])} task(s) recorded, {len(tasks)} now); rerun with the same inputs, "
                         "or delete that folder to start again")
    return stored["tasks"], record


def start_job(job: JobFolder, record: dict) -> None:
    """Record the plan (``check_job``'s), once the job can start: its workers have opened the model.

    A batch that fails before (Ray missing, too many workers, a model no worker can open, a
    signal while Ray starts) leaves no plan, so the same command runs again without ``--resume``.
    """
    _pin(job, record)


def _pin(job: JobFolder, record: dict) -> dict:
    return job.pin(record, part="settings", refusal=f"{job.root}: --resume: the recorded job used",
                   hint="rerun with the same settings, or delete that folder to start again")


def recorded_outputs(job: JobFolder) -> set[Path]:
    """The outputs the recorded plan names (resolved; empty without a plan): never inputs of a rerun,
    even where the output folder is the input folder (outputs beside inputs, with ``--suffix``)."""
    if not job.exists():
        return set()
    return {Path(t["dst"]).resolve() for t in job.read_record().get("tasks", [])}


def update_plan_units(job: JobFolder, units: dict[str, int]) -> None:
    """Record video frame counts (known once a video is probed) in plan.json."""
    plan = job.read_record()
    for t in plan["tasks"]:
        if t["id"] in units:
            t["units"] = units[t["id"]]
    job.write_record(plan)


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
