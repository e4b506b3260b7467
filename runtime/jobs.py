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
  trusts an output only while it is the one that was written) or failed (with the error).
  Video segments need no state file: a finished segment is a file holding exactly its frames.

Every file is written atomically (``atomic.write_json``); a killed run leaves the old file or
the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_json

DONE, FAILED = "done", "failed"


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
    """What decides a job's pixels besides its inputs and encoder: the model file and the session
    and tile settings (stored in the record, so ``--resume`` refuses another model or tiling).

    Args:
        upscaler: the ``Upscaler`` (its session's backend and precision, its tile settings).
        model: the model file the session was opened from.
    """
    session = upscaler.session
    return {"model": str(os.path.abspath(model)), "model_size": os.path.getsize(model), "backend": session.backend,
            "precision": session.precision, "tile": upscaler.tile, "tile_pad": upscaler.tile_pad}


def output_stamp(path: str | os.PathLike) -> dict:
    """What a done state records of its output, and what ``is_finished`` checks."""
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


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

    def mark_done(self, task_id: str, output: str | os.PathLike, **fields) -> None:
        """Record a task as done right after its output was written (``fields``: attempts, worker...)."""
        self.write_state(task_id, {"state": DONE, **fields, **output_stamp(output)})

    def mark_failed(self, task_id: str, error: str, attempts: int) -> None:
        self.write_state(task_id, {"state": FAILED, "attempts": attempts, "error": error})

    def is_finished(self, task_id: str, output: str | os.PathLike) -> bool:
        """Done, and the output is still the one that was written (same size and mtime)."""
        state = self.read_state(task_id)
        if not state or state.get("state") != DONE:
            return False
        try:
            return output_stamp(output) == {"size": state.get("size"), "mtime_ns": state.get("mtime_ns")}
        except OSError:
            return False
