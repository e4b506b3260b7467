"""``run_batch``: plan the job, start or attach to Ray, keep every worker busy, retry, report.

Scheduling is pull-style: each actor holds one task at a time and gets the next one from the
driver's queue the moment it returns (``ray.wait`` on the running calls), so slow and fast tasks
balance themselves and a dead worker loses exactly one task. One task in flight per actor costs a
driver round trip between tasks (about a millisecond, measured by ``scripts/bench_batch.py``) and
keeps a SIGKILL from taking queued work down with it.

Failures:

* input error (unreadable file, unwritable output): reported by name, not retried, job goes on;
* the worker process died (SIGKILL, OOM killer, node lost): a new actor replaces it and the task
  runs again, up to ``retries`` more times;
* any other exception inside a task: retried the same way (the actor stays).

Before any actor exists, the request is checked against the slots (``resources``): a local Ray
instance is started with the machine's cores, never more, and a request above the machine or
above an attached cluster's nodes is refused with the numbers. ``ray.init`` replaces the SIGTERM
handler; the driver puts srdeploy's back (``runtime.interrupt``) for the job and Ray's shutdown.

Ray is imported here only, inside functions.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..atomic import write_json
from ..interrupt import Terminated, sigterm_as_interrupt
from ..jobs import JobFolder
from ..media.files import collect
from ..progress import progress_bar, say
from ..settings import RunSettings
from .job import (Settings, Summary, WorkerStats, check_job, job_folder, plan_tasks, recorded_outputs, start_job,
                  update_plan_units)
from .resources import Demand, check_cluster, check_machine, worker_demand
from .video import output_problems, unavailable_reason


@dataclass
class BatchConfig:
    """What ``srdeploy batch`` was asked to do (the CLI fills it).

    Attributes:
        inputs: files, folders, globs, manifests.  outdir: output folder (holds the job folder).
        run: the ``RunSettings``: the ``SessionRecipe`` each worker opens and its ``TileSettings``.
        settings: what decides outputs (plan.json).
        workers: actors.  threads_per_worker: CPUs each actor reserves (and ONNX Runtime threads).
        gpus_per_worker: GPUs each actor reserves (Ray pins it via CUDA_VISIBLE_DEVICES); 0 = none.
        address: Ray cluster to attach to ("auto", "HOST:PORT"); None = start a local one (or use
            the one already initialised in this process).
        recursive, resume, retries, overwrite: see the CLI help.
        json: also write the summary here.  progress: the bar on stderr.
    """

    inputs: list[str]
    outdir: str
    run: RunSettings
    settings: Settings
    workers: int = 1
    threads_per_worker: int = 1
    gpus_per_worker: float = 0.0
    address: str | None = None
    recursive: bool = False
    resume: bool = False
    retries: int = 2
    overwrite: bool = False
    json: str | None = None
    progress: bool = True
    quality: int | None = None
    ray_init: dict = field(default_factory=dict)


def _cause(exc: BaseException) -> str:
    """The last meaningful line of a Ray error (its traceback is long; the cause is at the end)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


class _Pool:
    """The actors, by slot; a dead one is replaced in its slot."""

    def __init__(self, ray, cfg: BatchConfig, job: JobFolder) -> None:
        from .worker import BatchWorker

        self.ray = ray
        self.cfg = cfg
        self.job = job
        # Actor restarts and task retries are ours (the driver decides from the job folder), not Ray's.
        self.remote = ray.remote(BatchWorker).options(num_cpus=cfg.threads_per_worker,
                                                      num_gpus=cfg.gpus_per_worker or None,
                                                      max_restarts=0, max_task_retries=0)
        self.actors = []
        self.stats = [WorkerStats(name=f"w{i}") for i in range(cfg.workers)]
        for i in range(cfg.workers):
            self.actors.append(self._new(i))

    def _new(self, slot: int):
        return self.remote.remote(self.cfg.run, str(self.job.root), self.stats[slot].name,
                                  {"quality": self.cfg.quality, "codec": self.cfg.settings.codec,
                                   "crf": self.cfg.settings.crf, "segment_frames": self.cfg.settings.segment_frames})

    def ready(self) -> list[dict]:
        """Wait until every actor has opened its session; an actor that cannot is an error."""
        infos = []
        for slot, actor in enumerate(self.actors):
            try:
                info = self.ray.get(actor.describe.remote())
            except self.ray.exceptions.RayError as exc:
                raise RuntimeError(f"batch: worker {self.stats[slot].name} could not open the model "
                                   f"{self.cfg.run.recipe.model}: {_cause(exc)}") from None
            self.stats[slot].pid, self.stats[slot].node = info["pid"], info["node"]
            infos.append(info)
        return infos

    def replace(self, slot: int) -> None:
        try:
            self.ray.kill(self.actors[slot], no_restart=True)
        except Exception:  # already gone
            pass
        self.actors[slot] = self._new(slot)
        self.stats[slot].restarts += 1
        self.stats[slot].pid = 0

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:
                pass


def _start_ray(cfg: BatchConfig):
    """Attach to ``cfg.address``, reuse this process's Ray, or start a local instance sized to the machine.

    Returns:
        (ray, started_here, demand): started_here is False when this process's Ray was reused (it
        is not shut down here); demand is what each worker reserves (``resources.worker_demand``).

    Raises:
        RuntimeError: a local instance would not fit the workers (``resources.check_machine``).
        Terminated: SIGTERM while Ray starts.
    """
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("srdeploy batch needs Ray: pip install 'srdeploy[cluster]'", name="ray") from exc
    demand = _demand(cfg, ram=None)
    if ray.is_initialized():
        return ray, False, demand
    import logging

    # ERROR, not WARNING: Ray's start-up notes (its token-authentication WARNING among them) ask
    # nothing of the user; its errors still show.
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                  configure_logging=True)
    kwargs.update(cfg.ray_init)
    if not cfg.address:
        # Sized to the machine, never to the request (a raylet given more CPUs than the machine
        # has dies under the workers): a request above the machine's slots is refused first.
        from ..budget import available_ram

        ram = available_ram()  # one reading for the default tile budget and the check against it
        demand = _demand(cfg, ram=ram)
        kwargs.setdefault("num_cpus", check_machine(demand, cfg.workers, ram))
    try:
        ray.init(address=cfg.address or "local", **kwargs)
    except SystemExit as exc:
        # ray.init installs its own SIGTERM handler (exit status 15) before ours can come back:
        # a SIGTERM while Ray starts lands there. Stop what it started and report it as ours (143).
        if exc.code != signal.SIGTERM:
            raise
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once only, as runtime.interrupt does
        ray.shutdown()
        raise Terminated() from None
    return ray, True, demand


def _demand(cfg: BatchConfig, ram: int | None) -> Demand:
    return worker_demand(cfg.threads_per_worker, cfg.gpus_per_worker, cfg.settings.device or "cpu", cfg.run.tiling,
                         ram=ram)


def run_batch(cfg: BatchConfig, *, log: Callable[[str], None] = say) -> Summary:
    """Run (or resume) a batch job; returns its summary (also written to the job folder).

    The plan is recorded only once the job can start (``job.start_job``), so a batch that fails
    before (Ray missing, too many workers, a model the workers cannot open) leaves nothing that
    blocks the same command.

    Raises:
        ValueError/OSError: bad flags, nothing to do, or a job folder that does not match.
        RuntimeError: the workers do not fit, or no worker could open the model.
        KeyboardInterrupt: Ctrl-C/SIGTERM (the states on disk stay; rerun with --resume).
    """
    t_start = time.perf_counter()
    if cfg.workers < 1 or cfg.threads_per_worker < 1 or cfg.retries < 0 or cfg.gpus_per_worker < 0:
        raise ValueError("--workers and --threads-per-worker must be >= 1, --retries and --gpus-per-worker >= 0")
    outdir = Path(cfg.outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"-o {outdir}: exists and is not a folder; batch writes into an output folder")
    job = job_folder(outdir)
    job.check_free(f"-o {outdir}")  # another batch writing OUTDIR: refused at once, before any work
    # Outputs are never inputs: OUTDIR inside an input tree is skipped, and so are the recorded
    # job's outputs (OUTDIR = an input folder), else a rerun's inputs would differ from the job's.
    pairs, problems = collect(cfg.inputs, recursive=cfg.recursive, manifests=True, exclude=outdir)
    recorded = recorded_outputs(job)
    pairs = [(f, rel) for f, rel in pairs if f.resolve() not in recorded]
    tasks, clashes = plan_tasks(pairs, outdir, cfg.settings)
    problems += clashes
    if not tasks:
        for msg in problems:
            log(f"srdeploy batch: error: {msg}")
        raise ValueError("batch: no input images or videos")
    with job.lock(f"-o {outdir}"):  # held for the whole run: two jobs never write one OUTDIR's states
        return _run_locked(cfg, job, tasks, problems, log, t_start)


def _run_locked(cfg: BatchConfig, job: JobFolder, tasks: list[dict], problems: list[str],
                log: Callable[[str], None], t_start: float) -> Summary:
    """``run_batch`` once the job folder is locked: check it against this run, then run the tasks."""
    tasks, record = check_job(job, cfg.settings, tasks, resume=cfg.resume)

    summary = Summary(tasks=len(tasks), settings=asdict(cfg.settings))
    summary.failures += [{"input": msg.split(":", 1)[0], "error": msg} for msg in problems]
    todo, early, skipped_units = _triage(cfg, job, tasks, summary, log)

    def start() -> None:
        """The job can start: record the plan and the failures found before it, clear stale states."""
        start_job(job, record)
        for task, error in early:
            _fail(job, summary, task, error, 0)
        for t in todo:
            job.clear_state(t.get("video") or t["id"])

    if todo:
        _run_tasks(cfg, job, todo, summary, skipped_units, log, start)
    else:
        start()
    summary.seconds = time.perf_counter() - t_start
    summary.failed = len(summary.failures)
    summary.ok = not summary.failures
    summary.units_per_s = summary.units / max(1e-9, summary.seconds - summary.startup_s)
    record = asdict(summary)
    write_json(job.root / "summary.json", record, fsync=False)
    if cfg.json:
        write_json(Path(cfg.json), record)
    return summary


def _triage(cfg: BatchConfig, job: JobFolder, tasks: list[dict], summary: Summary,
            log: Callable[[str], None]) -> tuple[list[dict], list[tuple[dict, str]], int]:
    """Sort the tasks, writing nothing: finished (kept), failed before any worker runs, to do.

    Returns:
        (todo, early failures as (task, error), progress units of the finished tasks).
    """
    todo: list[dict] = []
    early: list[tuple[dict, str]] = []
    skipped_units = 0
    why_no_video = unavailable_reason()
    # Output settings a video's container cannot take fail that video now, not on a worker after the model loads.
    bad_output = output_problems(tasks, codec=cfg.settings.codec, crf=cfg.settings.crf) if not why_no_video else {}
    for t in tasks:
        if job.is_finished(t["id"], t["dst"]):
            summary.skipped += 1
            skipped_units += t["units"]
        elif t["preexisting"] and not cfg.overwrite:
            early.append((t, f"{t['dst']}: already exists; pass --overwrite to replace it"))
        elif t["kind"] == "video" and why_no_video:
            early.append((t, f"{t['src']}: {why_no_video}"))
        elif t["id"] in bad_output:
            early.append((t, bad_output[t["id"]]))
        elif t["kind"] == "video":  # planned by a worker, which queues its segments, then the join
            todo.append({**t, "id": f"{t['id']}.plan", "kind": "video-plan", "video": t["id"], "units": 0})
        else:
            todo.append(dict(t))
    if summary.skipped:
        log(f"srdeploy batch: --resume: {summary.skipped} finished task(s) kept (outputs checked)")
    return todo, early, skipped_units


def _fail(job: JobFolder, summary: Summary, task: dict, error: str, attempts: int) -> None:
    job.mark_failed(task["id"], error, attempts)
    summary.failures.append({"input": task["src"], "error": error})


def _where(cfg: BatchConfig, started_here: bool) -> str:
    if cfg.address:
        return f"the Ray cluster at {cfg.address}"
    return "the local Ray instance" if started_here else "the Ray instance this process is attached to"


def _run_tasks(cfg: BatchConfig, job: JobFolder, todo: list[dict], summary: Summary, skipped_units: int,
               log: Callable[[str], None], start: Callable[[], None]) -> None:
    t0 = time.perf_counter()
    ray, started_here, demand = _start_ray(cfg)
    pool = None
    bar = None
    # ray.init replaced the SIGTERM handler (Ray's exits with status 15, and its C++ core prints a
    # stack dump first): srdeploy's again, for the job and Ray's shutdown, so SIGTERM gives one
    # line and status 143 (runtime.interrupt), with every state on disk kept for --resume.
    with sigterm_as_interrupt():
        try:
            check_cluster(ray.nodes(), demand, cfg.workers, _where(cfg, started_here))
            pool = _Pool(ray, cfg, job)
            infos = pool.ready()
            start()
            summary.startup_s = time.perf_counter() - t0
            summary.cluster = {"address": cfg.address or ("local" if started_here else "attached"),
                               "resources": {k: v for k, v in ray.cluster_resources().items()
                                             if k in ("CPU", "GPU", "memory")},
                               "nodes": len({i["node"] for i in infos})}
            log(f"srdeploy batch: {infos[0]['line']}")
            log(f"srdeploy batch: {len(todo)} task(s) on {cfg.workers} worker(s) x {cfg.threads_per_worker} "
                f"thread(s)" + (f" x {cfg.gpus_per_worker:g} GPU" if cfg.gpus_per_worker else "")
                + f", Ray ready in {summary.startup_s:.1f} s")
            total = skipped_units + sum(t["units"] for t in todo)
            bar = progress_bar(total=total, initial=skipped_units, unit="item", desc="images+frames",
                               enabled=cfg.progress)
            _Scheduler(ray, pool, job, deque(todo), cfg.retries, summary, bar, log).run()
        finally:
            if bar is not None:
                bar.close()
            if pool is not None:
                summary.workers = [s.as_dict() for s in pool.stats]
                pool.close()
            if started_here:
                ray.shutdown()


class _Scheduler:
    """Keep one task on every actor until the queue is empty and nothing runs.

    Images are one task each. A video starts as a ``video-plan`` task; its result queues the
    unfinished segments (at the front, so a video finishes early and its segments spread over
    the workers), and the last segment queues the ``join``. A failed part fails the whole video
    once and drops its queued segments.
    """

    def __init__(self, ray, pool: _Pool, job: JobFolder, queue: deque, retries: int, summary: Summary, bar,
                 log: Callable[[str], None]) -> None:
        self.ray, self.pool, self.job, self.queue, self.retries = ray, pool, job, queue, retries
        self.summary, self.bar, self.log = summary, bar, log
        self.attempts: dict[str, int] = {}
        self.videos: dict[str, dict] = {}  # video id -> {"left": segments to go, "failed": bool, "job": VideoJob}

    def run(self) -> None:
        ray, pool = self.ray, self.pool
        running: dict = {}  # ObjectRef -> (slot, task, start time)
        idle = set(range(len(pool.actors)))
        while self.queue or running:
            while self.queue and idle:
                slot = idle.pop()
                task = self.queue.popleft()
                self.attempts[task["id"]] = self.attempts.get(task["id"], 0) + 1
                task["attempt"] = self.attempts[task["id"]]
                running[pool.actors[slot].run.remote(task)] = (slot, task, time.perf_counter())
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                slot, task, started = running.pop(ref)
                stats = pool.stats[slot]
                stats.busy_s += time.perf_counter() - started
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    stats.lost += 1
                    self.log(f"srdeploy batch: worker {stats.name} died running {task['src']} "
                             f"({task['kind']}; {_cause(exc)}); starting a new one")
                    pool.replace(slot)
                    self._retry_or_fail(task, "its worker died")
                except ray.exceptions.RayError as exc:
                    self._retry_or_fail(task, _cause(exc))
                else:
                    stats.tasks += 1
                    stats.pid = result["pid"]
                    for note in result["notes"]:
                        if ": error: " not in note:
                            self.log(note.replace("srdeploy upscale:", "srdeploy batch:"))
                    if result["ok"]:
                        stats.units += result["units"]
                        self.summary.units += result["units"]
                        self.bar.update(result["units"])
                        self._finished(task, result)
                    else:
                        stats.failures += 1
                        self._fail(task, result["error"])
                idle.add(slot)

    def _finished(self, task: dict, result: dict) -> None:
        kind = task["kind"]
        if kind in ("image", "join"):
            self.summary.done += 1
        elif kind == "video-plan":
            plan = result["plan"]
            vid = task["video"]
            todo = [seg for seg, done in zip(plan["job"].tasks, plan["done"]) if not done]
            reused = sum(seg.count for seg, done in zip(plan["job"].tasks, plan["done"]) if done)
            self.videos[vid] = {"left": len(todo), "failed": False, "job": plan["job"]}
            self.bar.total = (self.bar.total or 0) + plan["frames"]
            self.bar.update(reused)
            update_plan_units(self.job, {vid: plan["frames"]})
            parts = [{"id": f"{vid}.s{seg.index:05d}", "kind": "segment", "video": vid, "src": task["src"],
                      "dst": task["dst"], "seg": seg, "units": seg.count} for seg in todo]
            if not parts:
                parts = [self._join(task)]
            self.queue.extendleft(reversed(parts))
        elif kind == "segment":
            video = self.videos[task["video"]]
            video["left"] -= 1
            if video["left"] == 0 and not video["failed"]:
                self.queue.appendleft(self._join(task))

    def _join(self, task: dict) -> dict:
        vid = task["video"]
        return {"id": vid, "kind": "join", "video": vid, "src": task["src"], "dst": task["dst"],
                "job": self.videos[vid]["job"], "units": 0}

    def _fail(self, task: dict, error: str) -> None:
        vid = task.get("video")
        if vid is not None:
            video = self.videos.setdefault(vid, {"left": 0, "failed": False, "job": None})
            if video["failed"]:
                return
            video["failed"] = True
            dropped = [t for t in self.queue if t.get("video") == vid]
            for t in dropped:
                self.queue.remove(t)
            self.bar.update(sum(t["units"] for t in dropped) + task["units"])
        else:
            self.bar.update(task["units"])  # its work is over too: the bar and ETA count what is left
        _fail(self.job, self.summary, {"id": vid or task["id"], "src": task["src"]}, error,
              self.attempts.get(task["id"], 0))
        self.log(f"srdeploy batch: error: {error}")

    def _retry_or_fail(self, task: dict, why: str) -> None:
        n = self.attempts[task["id"]]
        if n <= self.retries:
            self.summary.retries += 1
            self.queue.appendleft(task)
            return
        self._fail(task, f"{task['src']}: failed {n} time(s), last because {why}; not retried "
                         f"(--retries {self.retries})")


def report_lines(summary: Summary) -> list[str]:
    """The end report: totals, per-worker figures, failures."""
    lines = [f"srdeploy batch: {summary.done} done, {summary.skipped} kept from before, {summary.failed} failed, "
             f"{summary.retries} retried; {summary.units} item(s) in {summary.seconds:.1f} s "
             f"(Ray start {summary.startup_s:.1f} s, {summary.units_per_s:.2f} items/s after it)"]
    for w in summary.workers:
        lines.append(f"  {w['name']} (pid {w['pid']} on {w['node']}): {w['tasks']} task(s), {w['units']} item(s), "
                     f"{w['failures']} failed, busy {w['busy_s']:.1f} s"
                     + (f", {w['lost']} lost to a dead worker, {w['restarts']} restart(s)" if w['lost'] or w['restarts']
                        else ""))
    if summary.failures:
        lines.append(f"srdeploy batch: {summary.failed} failed:")
        lines += [f"  {f['error']}" for f in summary.failures]
    return lines
