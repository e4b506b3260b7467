"""runtime.jobs: the one job folder behind `video --resume` (job.json) and `batch --resume` (plan.json, tasks/)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from srdeploy.runtime.atomic import write_json
from srdeploy.runtime.interrupt import Terminated, sigterm_as_interrupt
from srdeploy.runtime.jobs import JobFolder, as_stored, changed_keys


def test_pin_writes_first_then_refuses_naming_every_changed_setting(tmp_path):
    job = JobFolder(tmp_path / "work", "job.json")
    record = {"settings": {"crf": 18, "pix": ("yuv420p",)}, "segments": [[0, 8]], "model": "a.onnx"}
    assert job.pin(record, refusal="out: --resume: made with", hint="h") == as_stored(record)
    assert json.loads(job.record_file.read_text()) == as_stored(record)
    assert job.pin(dict(record), refusal="r", hint="h") == as_stored(record)  # same settings: the stored record
    with pytest.raises(ValueError) as err:
        job.pin({**record, "model": "b.onnx", "tile": 64}, refusal="out: --resume: made with",
                hint="rerun with the same settings")
    assert str(err.value) == "out: --resume: made with different model, tile; rerun with the same settings"
    assert json.loads(job.record_file.read_text())["model"] == "a.onnx"  # never overwritten by a refused run


def test_pin_part_compares_only_that_key(tmp_path):
    job = JobFolder(tmp_path, "plan.json")
    job.pin({"settings": {"tile": 16}, "tasks": [1]}, part="settings", refusal="r", hint="h")
    stored = job.pin({"settings": {"tile": 16}, "tasks": [1, 2]}, part="settings", refusal="r", hint="h")
    assert stored["tasks"] == [1]  # the caller checks the task list itself
    with pytest.raises(ValueError, match="different tile, workers"):
        job.pin({"settings": {"tile": 24, "workers": 2}, "tasks": [1]}, part="settings", refusal="r", hint="h")


def test_changed_keys_counts_missing_keys():
    assert changed_keys({"a": 1, "b": 2}, {"a": 1, "c": None}) == ["b"]
    assert changed_keys({"a": 1}, {"a": 1, "c": 3}) == ["c"]


def test_task_states_trust_an_output_only_while_it_is_unchanged(tmp_path):
    job = JobFolder(tmp_path / ".job", "plan.json")
    out = tmp_path / "out.png"
    out.write_bytes(b"result")
    assert not job.is_finished("000001", out)
    job.mark_done("000001", out, attempts=1, worker="w0")
    state = job.read_state("000001")
    assert state["state"] == "done" and state["worker"] == "w0" and state["size"] == 6
    assert job.is_finished("000001", out)
    out.write_bytes(b"damaged")
    assert not job.is_finished("000001", out)
    job.mark_failed("000002", "in.png: not a readable image", 2)
    assert job.read_state("000002") == {"state": "failed", "attempts": 2, "error": "in.png: not a readable image"}
    assert not job.is_finished("000002", out)
    job.state_file("000003").parent.mkdir(exist_ok=True)
    job.state_file("000003").write_text("{half a fi")  # unreadable: run it again
    assert job.read_state("000003") is None
    job.clear_state("000001")
    assert not job.is_finished("000001", out)


def test_write_json_is_atomic_and_readable(tmp_path):
    path = tmp_path / "sub" / "s.json"
    write_json(path, {"a": [1, 2]})
    assert path.read_text() == '{\n "a": [\n  1,\n  2\n ]\n}\n'
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})  # not JSON: the old file stays, no temporary is left
    assert json.loads(path.read_text()) == {"a": [1, 2]} and os.listdir(path.parent) == ["s.json"]


def test_sigterm_becomes_terminated_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as err:
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next statement
            raise AssertionError("SIGTERM did not interrupt")
    assert isinstance(err.value, KeyboardInterrupt)  # every finally/atomic_target cleans up as for Ctrl-C
    assert signal.getsignal(signal.SIGTERM) == before
