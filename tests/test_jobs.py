"""runtime.jobs: the one job folder behind `video --resume` (job.json) and `batch --resume` (plan.json, tasks/)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from srdeploy.runtime.atomic import write_json
from srdeploy.runtime.interrupt import Terminated, sigterm_as_interrupt
from srdeploy.runtime.jobs import JobFolder, JobLocked, as_stored, changed_keys, model_files, model_sha256
from srdeploy.runtime.metadata import sha256_file


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


# --------------------------------------------------------------------------- the lock (issue 25 item 1)
def test_lock_refuses_a_second_holder_at_once_naming_it(tmp_path):
    job = JobFolder(tmp_path / "work", "job.json")
    with job.lock("out.mkv"):
        holder = json.loads(job.lock_file.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"] > 0
        with pytest.raises(JobLocked) as err:  # flock is per open file: a second open is refused here too
            with JobFolder(tmp_path / "work", "job.json").lock("out.mkv"):
                raise AssertionError("two holders")
        message = str(err.value)
        assert message.startswith("out.mkv: another job is writing it: pid ") and f"pid {os.getpid()} " in message
        assert "\n" not in message and str(job.root) in message
    with job.lock("out.mkv"):  # released at the end of the block
        pass


def test_check_free_refuses_a_held_folder_and_writes_nothing(tmp_path):
    job = JobFolder(tmp_path / "work", "job.json")
    job.check_free("o")  # no folder: free, and none is made
    assert not job.root.exists()
    with job.lock("o"):
        content = job.lock_file.read_bytes()
        with pytest.raises(JobLocked, match=f"^o: another job is writing it: pid {os.getpid()} "):
            JobFolder(tmp_path / "work").check_free("o")
        assert job.lock_file.read_bytes() == content
    job.check_free("o")  # released: free, the file untouched
    assert job.lock_file.read_bytes() == content
    # another command's check_free holds a shared lock for an instant: the real job waits it out
    import fcntl
    import threading

    fd = os.open(job.lock_file, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.05, os.close, (fd,)).start()
    with job.lock("o"):
        assert json.loads(job.lock_file.read_text())["pid"] == os.getpid()


def test_lock_left_by_a_killed_process_blocks_nothing(tmp_path):
    """The kernel drops a dead holder's flock; its stale lock file content is overwritten."""
    import subprocess
    import sys

    job = JobFolder(tmp_path / "work", "job.json")
    code = ("import sys, time; from pathlib import Path; from srdeploy.runtime.jobs import JobFolder\n"
            "with JobFolder(Path(sys.argv[1])).lock('o'):\n    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(job.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(JobLocked, match=f"pid {p.pid} "):
            with job.lock("o"):
                pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert json.loads(job.lock_file.read_text())["pid"] == p.pid  # stale content stays behind...
    with job.lock("o"):  # ...and does not matter
        assert json.loads(job.lock_file.read_text())["pid"] == os.getpid()
    job.lock_file.write_bytes(b"\x00\xffnot json")  # any content at all
    with job.lock("o"):
        pass


def test_lock_taken_on_a_folder_its_holder_removed_is_taken_again(tmp_path, monkeypatch):
    """A finished video job removes its work folder while holding the lock: whoever opened the old
    lock file must not think it owns the new folder."""
    import shutil

    import srdeploy.runtime.jobs as jobs

    job = JobFolder(tmp_path / "work", "job.json")
    real_flock = jobs.fcntl.flock
    calls = []

    def flock_after_removal(fd, op):
        if not calls:  # the first attempt: the holder finishes and removes the folder right now
            shutil.rmtree(job.root)
        calls.append(op)
        return real_flock(fd, op)

    monkeypatch.setattr(jobs.fcntl, "flock", flock_after_removal)
    with job.lock("o"):
        assert len(calls) == 2 and job.lock_file.is_file()
        assert os.stat(job.lock_file).st_ino == os.fstat(_held_fd(job)).st_ino


def _held_fd(job: JobFolder) -> int:
    """The descriptor this process holds on the lock file (from /proc)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(job.lock_file):
                return int(fd)
        except OSError:
            continue
    raise AssertionError("no descriptor on the lock file")


# --------------------------------------------------------------------------- checksums (items 3, 10)
def test_checksum_state_trusts_the_bytes_not_the_mtime(tmp_path):
    job = JobFolder(tmp_path / ".job")
    seg = tmp_path / "seg-00000.mov"
    seg.write_bytes(b"0123456789" * 100)
    job.mark_done("seg-00000", seg, checksum=True, frames=8)
    state = job.read_state("seg-00000")
    assert state["sha256"] == sha256_file(seg) and state["frames"] == 8
    os.utime(seg, ns=(1, 1))  # copied without -p: same bytes, another mtime
    assert job.is_finished("seg-00000", seg)
    st = seg.stat()
    data = bytearray(seg.read_bytes())
    data[500] ^= 0xFF  # one damaged byte, same size
    seg.write_bytes(bytes(data))
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the same mtime
    assert not job.is_finished("seg-00000", seg)


def test_model_sha256_covers_the_weights_files(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph")
    first = model_sha256(model)
    st = model.stat()
    model.write_bytes(b"GRAPH")  # same size, same path, same mtime: another model
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_sha256(model) != first
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    assert model_files(xml) == [xml]
    (tmp_path / "m.bin").write_bytes(b"weights-1")
    assert model_files(xml) == [xml, tmp_path / "m.bin"]
    before = model_sha256(xml)
    (tmp_path / "m.bin").write_bytes(b"weights-2")  # OpenVINO IR: the weights live in the .bin
    assert model_sha256(xml) != before


def test_model_sha256_covers_onnx_external_data(tmp_path):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32).reshape(64, 64), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    path = tmp_path / "ext.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True, location="ext.weights",
              size_threshold=0)
    assert model_files(path) == [path, tmp_path / "ext.weights"]
    before = model_sha256(path)
    data = bytearray((tmp_path / "ext.weights").read_bytes())
    data[100] ^= 1
    (tmp_path / "ext.weights").write_bytes(bytes(data))
    assert model_sha256(path) != before
