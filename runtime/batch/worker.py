"""``BatchWorker``: the body of one Ray actor. It opens the session once and runs tasks one at a time.

A plain class (no ray import): the driver wraps it with ``ray.remote(num_cpus=..., num_gpus=...)``.
The actor receives a ``SessionRecipe`` (picklable) and opens the session itself, so nothing open
crosses a process boundary. With ``--gpus-per-worker``, Ray sets ``CUDA_VISIBLE_DEVICES`` for the
actor before this runs, so the recipe's "cuda" is the actor's own GPU.

``run(task)`` returns a small result dict and never raises for a bad input: an input error is a
result (reported by name, not retried, since it would fail the same way again); anything else
propagates to the driver, which retries the task on a worker up to ``--retries`` times. A task
that succeeds writes its done state itself, right after its output, so a driver killed at any
moment loses at most the tasks that were running.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..jobs import JobFolder
from .job import PLAN_FILE

INPUT_ERRORS = (ValueError, OSError, MemoryError)


class BatchWorker:
    """One worker: a session, an ``Upscaler`` and the job folder.

    Args:
        run: the ``RunSettings``: the ``SessionRecipe`` to open and the ``TileSettings``.
        job_root: the job folder (``OUTDIR/.srdeploy-batch``).
        name: the worker's name in the report.
        options: output options: quality (images), codec/crf/segment_frames (videos).
    """

    def __init__(self, run, job_root: str, name: str, options: dict) -> None:
        from ..open import open_session
        from ..upscale import Upscaler

        self.name = name
        self.job = JobFolder(Path(job_root), PLAN_FILE)
        self.options = options
        self.model = run.recipe.model
        self.session = open_session(run.recipe)
        self.upscaler = Upscaler(self.session, run.tiling)

    def describe(self) -> dict:
        """Who and where this worker is, and the session line every runtime command prints."""
        from ..open import describe_session

        return {"name": self.name, "pid": os.getpid(), "node": socket.gethostname(),
                "line": describe_session(self.session, self.model, self.upscaler),
                "scale": self.upscaler.scale}

    def run(self, task: dict) -> dict:
        """Run one task (see ``srdeploy.runtime.batch.job`` and ``.video`` for the kinds)."""
        from . import video

        t0 = time.perf_counter()
        notes: list[str] = []
        extra: dict = {}
        if task["kind"] in ("image", "join"):
            _drop_partials(Path(task["dst"]))
        units = 0
        try:
            if task["kind"] == "image":
                self._image(task, notes)
                units = task["units"]
            elif task["kind"] == "video-plan":
                extra["plan"] = video.plan_video(task["src"], task["dst"], self.upscaler, self.model,
                                                 codec=self.options.get("codec"), crf=self.options.get("crf"),
                                                 segment_frames=self.options.get("segment_frames"))
                notes += [f"srdeploy batch: note: {n}" for n in extra["plan"]["notices"]]
            elif task["kind"] == "segment":
                units = video.run_segment(task["seg"], self.upscaler, batch=self.upscaler.batch)
            elif task["kind"] == "join":
                notes += [f"srdeploy batch: note: {task['dst']}: {n}" for n in video.join_video(task["job"])]
            else:
                raise ValueError(f"{task['src']}: unknown task kind {task['kind']!r}")
        except INPUT_ERRORS + video.input_errors() as exc:
            return {"id": task["id"], "ok": False, "error": str(exc) if task["src"] in str(exc) or task["dst"] in
                    str(exc) else f"{task['src']}: {exc}", "seconds": time.perf_counter() - t0, "units": 0,
                    "notes": notes, "pid": os.getpid()}
        seconds = time.perf_counter() - t0
        if task["kind"] in ("image", "join"):  # the task that writes the job's output records it as done
            self.job.mark_done(task["id"], task["dst"], attempts=task.get("attempt", 1), worker=self.name,
                               seconds=round(seconds, 4))
        return {"id": task["id"], "ok": True, "seconds": seconds, "units": units, "notes": notes,
                "pid": os.getpid(), **extra}

    def _image(self, task: dict, notes: list[str]) -> None:
        from ..upscale import upscale_files

        # The library loop `srdeploy upscale` runs, on one file: the same reading, tiling, checks
        # and writing, so the outputs are the same bytes. Outputs the job planned may be replaced
        # (a retried task's earlier attempt); the driver refused pre-existing ones without --overwrite.
        report = upscale_files(self.upscaler, {Path(task["src"]): Path(task["dst"])}, overwrite=True,
                               quality=self.options.get("quality"), progress=False, log=notes.append)
        if report.failures:
            raise ValueError(report.failures[0])


def _drop_partials(dst: Path) -> None:
    """Remove the temporary files a SIGKILLed attempt at this output left (``atomic_target`` names,
    ``.NAME.XXXX.tmp*``); a clean failure removes its own, a killed process cannot."""
    import glob

    for f in dst.parent.glob(f".{glob.escape(dst.name)}.*.tmp*"):
        f.unlink(missing_ok=True)
