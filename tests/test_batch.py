"""`srdeploy batch` on a local Ray cluster (CPU, loopback only, one cluster for the module).

Real behaviour on small real images: outputs equal `srdeploy upscale`, a worker SIGKILLed mid-run
is replaced and its task redone, a killed driver is resumed without rewriting finished outputs, a
bad file is reported by name with exit status 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="srdeploy batch needs Ray: pip install 'srdeploy[cluster]'")

from srdeploy.cli import main  # noqa: E402

pytestmark = pytest.mark.slow
SCALE = 2


@pytest.fixture(scope="module")
def model(tiny_srresnet_x2) -> Path:
    return tiny_srresnet_x2


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (start-up costs seconds), stopped at the end."""
    ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False,
             _node_ip_address="127.0.0.1", configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def images(set14, tmp_path_factory) -> Path:
    """A small input tree: RGB crops of real images (one in a sub-folder), a gray one and an RGBA one."""
    d = tmp_path_factory.mktemp("batch_in")
    (d / "sub").mkdir()
    files = sorted(set14.glob("*.png"))[:6]
    for i, f in enumerate(files):
        img = cv2.imread(str(f))[:40 + 4 * i, :56]
        cv2.imwrite(str(d / ("sub" if i == 5 else ".") / f"im{i}.png"), img)
    gray = cv2.imread(str(files[0]), cv2.IMREAD_GRAYSCALE)[:30, :30]
    cv2.imwrite(str(d / "gray.png"), gray)
    rgba = cv2.cvtColor(cv2.imread(str(files[1]))[:24, :36], cv2.COLOR_BGR2BGRA)
    rgba[:, :, 3] = np.linspace(0, 255, 36, dtype=np.uint8)[None]
    cv2.imwrite(str(d / "alpha.png"), rgba)
    return d


def _tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.png") if ".srdeploy-batch" not in p.parts)


def _same_pixels(a: Path, b: Path) -> bool:
    x, y = cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED)
    return x is not None and x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y)


def _reference(model: Path, files: list[Path], out: Path, tile: int) -> None:
    """`srdeploy upscale` on each file (one thread, as each batch worker uses)."""
    for f in files:
        assert main(["upscale", "-q", "-i", str(f), "-o", str(out / f.name), "--model", str(model), "--tile",
                     str(tile), "--threads", "1"]) == 0


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below ``pid`` (only our own cluster's processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            try:
                found[c] = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            todo.append(c)
    return found


def _driver(args: list[str], addr: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "srdeploy", "batch", "-q", "--address", addr, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_images_on_two_workers_equal_upscale(cluster, model, images, tmp_path):
    out = tmp_path / "out"
    rc = main(["batch", "-q", "-i", str(images), "-o", str(out), "--model", str(model), "--tile", "16",
               "--workers", "2", "--recursive", "--json", str(tmp_path / "s.json")])
    assert rc == 0
    inputs = _tree(images)
    assert _tree(out) == inputs and Path("sub/im5.png") in inputs  # the tree is mirrored
    ref = tmp_path / "ref"
    _reference(model, [images / p for p in inputs], ref, 16)
    for p in inputs:
        assert _same_pixels(out / p, ref / p.name), p
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] and summary["done"] == len(inputs) and summary["units"] == len(inputs)
    assert [w["tasks"] > 0 for w in summary["workers"]] == [True, True]  # both workers pulled work
    states = [json.loads(p.read_text()) for p in (out / ".srdeploy-batch" / "tasks").glob("*.json")]
    assert len(states) == len(inputs) and all(s["state"] == "done" for s in states)


def test_bad_file_is_reported_and_the_others_written(cluster, model, images, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("im0.png", "im1.png"):
        (src / name).write_bytes((images / name).read_bytes())
    (src / "broken.png").write_bytes(b"not a png at all")
    manifest = tmp_path / "list.txt"
    manifest.write_text("in/im0.png\nin/broken.png\n# a comment\nin/im1.png\n")
    out = tmp_path / "out"
    rc = main(["batch", "-q", "-i", str(manifest), "-o", str(out), "--model", str(model), "--tile", "16",
               "--workers", "1", "--json", str(tmp_path / "s.json")])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{src / 'broken.png'}: not a readable image" in err
    assert sorted(p.name for p in (out / "in").iterdir()) == ["im0.png", "im1.png"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert not summary["ok"] and summary["done"] == 2 and summary["failed"] == 1
    assert summary["failures"][0]["input"] == str(src / "broken.png")
    # a rerun without --resume refuses to mix with the recorded job; with it, only the bad file runs again
    args = ["batch", "-q", "-i", str(manifest), "-o", str(out), "--model", str(model), "--tile", "16"]
    assert main(args) == 1 and "pass --resume to continue it" in capsys.readouterr().err
    assert main(args + ["--resume", "--json", str(tmp_path / "s2.json")]) == 1
    again = json.loads((tmp_path / "s2.json").read_text())
    assert again["skipped"] == 2 and again["failed"] == 1


def test_max_memory_changes_the_chosen_tile(cluster, model, images, tmp_path, capsys):
    """--max-memory reaches the workers' Upscaler: a tiny budget forces small tiles (the worker's note
    says which), the output equals `srdeploy upscale` with the same budget, and plan.json pins it."""
    import re

    src = images / "im0.png"  # 40x56: whole in any real budget, tiles of at most 16 in 1 MiB
    tiles = {}
    for budget in ("1M", "4G"):
        out = tmp_path / budget
        assert main(["batch", "-q", "-i", str(src), "-o", str(out), "--model", str(model), "--max-memory", budget,
                     "--workers", "1"]) == 0
        tiles[budget] = re.findall(r"tile auto -> (whole image|\d+x\d+)", capsys.readouterr().err)
        plan = json.loads((out / ".srdeploy-batch" / "plan.json").read_text())
        assert plan["settings"]["tile"] == "auto" and plan["settings"]["max_memory"] in (1 << 20, 4 << 30)
    assert tiles["4G"] == ["whole image"]
    assert len(tiles["1M"]) == 1 and tiles["1M"][0] != "whole image"
    assert max(int(v) for v in tiles["1M"][0].split("x")) <= 16
    ref = tmp_path / "ref.png"
    assert main(["upscale", "-q", "-i", str(src), "-o", str(ref), "--model", str(model), "--max-memory", "1M",
                 "--threads", "1"]) == 0
    assert _same_pixels(tmp_path / "1M" / "im0.png", ref)
    # resuming with another budget would mix tilings in one job: refused by name
    assert main(["batch", "-q", "-i", str(src), "-o", str(tmp_path / "1M"), "--model", str(model), "--resume"]) == 1
    assert "different max_memory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def bigger(set5, tmp_path_factory) -> Path:
    """Images large enough (with --tile 24) that a worker is mid-task most of the time."""
    d = tmp_path_factory.mktemp("batch_big")
    files = sorted(set5.glob("*.png"))
    for i in range(10):
        img = cv2.imread(str(files[i % len(files)]))
        cv2.imwrite(str(d / f"b{i}.png"), img[8 * i:8 * i + 120, :160])
    return d


def test_worker_sigkill_mid_run_is_retried(cluster, model, bigger, tmp_path):
    out = tmp_path / "out"
    proc = _driver(["-i", str(bigger), "-o", str(out), "--model", str(model), "--tile", "24", "--workers", "2",
                    "--retries", "2", "--json", str(tmp_path / "s.json")], cluster)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        # Kill a worker while it runs a task, once the job is under way (one output written).
        if list((out / ".srdeploy-batch" / "tasks").glob("*.json")) if out.exists() else []:
            busy = [pid for pid, cmd in _descendants(os.getpid()).items() if "ray::BatchWorker.run" in cmd]
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed = busy[0]
        time.sleep(0.005)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, "no busy worker was seen to kill: " + err
    assert proc.returncode == 0, err
    assert "died running" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["retries"] >= 1 and sum(w["lost"] for w in summary["workers"]) == 1
    assert summary["done"] == 10
    ref = tmp_path / "ref"
    _reference(model, sorted(bigger.glob("*.png")), ref, 24)
    for f in sorted(bigger.glob("*.png")):
        assert _same_pixels(out / f.name, ref / f.name), f.name


def test_driver_killed_then_resume_keeps_finished_outputs(cluster, model, bigger, tmp_path):
    out = tmp_path / "out"
    args = ["-i", str(bigger), "-o", str(out), "--model", str(model), "--tile", "24", "--workers", "1"]
    proc = _driver(args, cluster)
    tasks = out / ".srdeploy-batch" / "tasks"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(tasks.glob("*.json")) if tasks.exists()
                                                                         else []) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done = {}
    for state in tasks.glob("*.json"):
        s = json.loads(state.read_text())
        if s["state"] == "done":
            done[state.stem] = s
    plan = json.loads((out / ".srdeploy-batch" / "plan.json").read_text())
    dst = {t["id"]: Path(t["dst"]) for t in plan["tasks"]}
    assert 3 <= len(done) < 10, "the driver was not killed mid-job"
    mtimes = {i: dst[i].stat().st_mtime_ns for i in done}
    time.sleep(0.05)
    rc = main(["batch", "-q", "--resume", *args, "--json", str(tmp_path / "s.json")])
    assert rc == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["skipped"] >= len(done) and summary["skipped"] + summary["done"] == 10
    assert {i: dst[i].stat().st_mtime_ns for i in done} == mtimes  # finished outputs not rewritten
    ref = tmp_path / "ref"
    _reference(model, sorted(bigger.glob("*.png")), ref, 24)
    for f in sorted(bigger.glob("*.png")):
        assert _same_pixels(out / f.name, ref / f.name), f.name
    # an output changed after it was recorded is not trusted: --resume redoes it
    first = dst[min(done)]
    first.write_bytes(b"damaged")
    assert main(["batch", "-q", "--resume", *args, "--json", str(tmp_path / "s2.json")]) == 0
    assert json.loads((tmp_path / "s2.json").read_text())["done"] == 1
    assert _same_pixels(first, ref / first.name)


def test_images_and_a_three_segment_video_on_two_workers_equal_video(cluster, model, images, tmp_path):
    from srdeploy.runtime.media import ffmpeg as ff

    exe = ff.ffmpeg_exe()
    src = tmp_path / "in"
    src.mkdir()
    clip = src / "clip.mp4"  # 20 frames, H.264 + AAC: segments of 8 -> 3 segments (8, 8, 4)
    subprocess.run([exe, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=10",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-t", "2", "-frames:v", "20",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(clip)], check=True)
    for name in ("im0.png", "im1.png"):
        (src / name).write_bytes((images / name).read_bytes())
    out = tmp_path / "out"
    rc = main(["batch", "-q", "-i", str(src), "-o", str(out), "--model", str(model), "--tile", "16",
               "--workers", "2", "--segment-frames", "8", "--json", str(tmp_path / "s.json")])
    assert rc == 0
    ref = tmp_path / "ref"
    assert main(["video", "-q", "-i", str(clip), "-o", str(ref / "clip.mp4"), "--model", str(model), "--tile", "16",
                 "--threads", "1", "--segment-frames", "8"]) == 0
    _reference(model, [src / "im0.png", src / "im1.png"], ref, 16)
    for name in ("im0.png", "im1.png"):
        assert _same_pixels(out / name, ref / name)

    def frames(path: Path) -> np.ndarray:
        r = subprocess.run([exe, "-v", "error", "-i", f"file:{path}", "-map", "0:V:0", "-fps_mode", "passthrough",
                            "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True)
        return np.frombuffer(r.stdout, np.uint8).reshape(-1, 64, 96, 3)

    got, want = frames(out / "clip.mp4"), frames(ref / "clip.mp4")
    assert got.shape[0] == 20 == want.shape[0]  # exactly the source's frame count
    assert np.array_equal(got, want)
    info = ff.probe(out / "clip.mp4")
    assert len(info.audio) == 1  # the audio stream is kept
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["ok"] and summary["done"] == 3 and summary["units"] == 2 + 20
    segs = [w["tasks"] for w in summary["workers"]]
    assert sum(segs) == 2 + 1 + 3 + 1 and min(segs) >= 1  # images, plan, 3 segments, join over both workers
    assert not (out / ".clip.mp4.srdeploy-video").exists()  # the work folder is removed after the join


NO_RAY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ray":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from srdeploy.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_gpu_flags_are_checked_before_work(model, images, tmp_path, capsys):
    base = ["batch", "-q", "-i", str(images / "im0.png"), "-o", str(tmp_path / "out"), "--model", str(model)]
    assert main(base + ["--device", "cuda"]) == 1
    assert "need --gpus-per-worker" in capsys.readouterr().err
    assert main(base + ["--gpus-per-worker", "1"]) == 1
    assert "pass --device cuda" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()




# ------------------------------------------------------------------ issue 25, items 12-15
def _only_our_lines(err: str) -> list[str]:
    """stderr's lines, each checked to be srdeploy's own (no Ray log line, WARNING or C++ stack dump)."""
    lines = err.splitlines()
    assert lines and all(ln.startswith("srdeploy batch: ") for ln in lines), err
    return lines


def _wait_for(cond, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None and not cond():
        time.sleep(0.01)


def test_item12_sigterm_mid_job_exits_143_with_one_line_and_resume_finishes(cluster, model, bigger, tmp_path):
    """The driver attaches to the module's Ray, which installs Ray's own SIGTERM handler (exit 15) and
    its C++ stack dump; srdeploy's handler must be back: status 143, one line, the job resumable."""
    out = tmp_path / "out"
    args = ["-i", str(bigger), "-o", str(out), "--model", str(model), "--tile", "24", "--workers", "1"]
    proc = _driver(args, cluster)
    tasks = out / ".srdeploy-batch" / "tasks"
    _wait_for(lambda: tasks.exists() and len(list(tasks.glob("*.json"))) >= 2, proc)
    assert proc.poll() is None, "the job ended before the signal: " + proc.communicate()[1]
    from srdeploy.runtime.jobs import JobFolder, JobLocked

    with pytest.raises(JobLocked, match="another job is writing it"):  # the running driver holds OUTDIR
        JobFolder(out / ".srdeploy-batch", "plan.json").check_free("-o out")
    proc.send_signal(signal.SIGTERM)
    out_, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and out_ == "", err + out_  # Ray's "(raylet) ..." lines go to stdout
    lines = _only_our_lines(err)
    assert [ln for ln in lines if "terminated" in ln] == [lines[-1]]
    assert lines[-1] == "srdeploy batch: terminated; finished tasks are recorded, rerun with --resume to continue"
    plan = json.loads((out / ".srdeploy-batch" / "plan.json").read_text())
    states = [json.loads(f.read_text()) for f in tasks.glob("*.json")]
    done = sum(s["state"] == "done" for s in states)
    assert 2 <= done < 10 and len(plan["tasks"]) == 10 and all(s["state"] == "done" for s in states)
    assert main(["batch", "-q", "--resume", *args, "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["skipped"] == done and summary["done"] == 10 - done  # every recorded output was kept


LOOPBACK = """
import functools, sys
import ray
ray.init = functools.partial(ray.init, _node_ip_address="127.0.0.1")  # the test's Ray stays on loopback
from srdeploy.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_item12_sigterm_while_the_local_ray_starts_exits_143_and_leaves_no_plan(cluster, model, images, tmp_path):
    """Without --address the driver starts its own Ray; SIGTERM while it starts is one line and status
    143, Ray's processes are stopped, and the same command runs again without --resume."""
    out = tmp_path / "out"
    args = ["batch", "-q", "-i", str(images / "im0.png"), "-o", str(out), "--model", str(model), "--tile", "16"]
    proc = subprocess.Popen([sys.executable, "-c", LOOPBACK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    ray_procs: dict[int, str] = {}

    def raylet_started() -> bool:
        ray_procs.update({pid: cmd for pid, cmd in _descendants(proc.pid).items() if "raylet" in cmd})
        return bool(ray_procs)

    _wait_for(raylet_started, proc)
    assert proc.poll() is None and ray_procs, "Ray was not seen starting: " + proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    out_, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and out_ == "", err + out_
    assert _only_our_lines(err)[-1].startswith("srdeploy batch: terminated;")
    assert not (out / ".srdeploy-batch" / "plan.json").exists()
    deadline = time.monotonic() + 30
    while not all(_gone(pid) for pid in ray_procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in ray_procs), ray_procs
    assert main(args) == 0 and (out / "im0.png").is_file()


def test_item13_more_workers_than_this_machine_has_cores_is_refused_before_ray_starts(model, images, tmp_path):
    """The local instance is sized to the machine, not to the request: one worker per core fits, one
    more is refused with the numbers, before any Ray process starts."""
    cores = len(os.sched_getaffinity(0))
    args = ["batch", "-q", "-i", str(images / "im0.png"), "-o", str(tmp_path / "out"), "--model", str(model),
            "--tile", "16", "--workers", str(cores + 1)]
    proc = subprocess.Popen([sys.executable, "-c", LOOPBACK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    started: list[str] = []
    _wait_for(lambda: started.extend(c for c in _descendants(proc.pid).values() if "raylet" in c) or False, proc)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and not started, err
    assert _only_our_lines(err) == [
        f"srdeploy batch: error: --workers {cores + 1} do not fit this machine: each worker reserves 1 CPU "
        f"(--threads-per-worker); this machine has {cores} usable core(s), room for {cores}; use --workers {cores} "
        "or fewer, or attach to a larger Ray cluster with --address"]
    assert not (tmp_path / "out" / ".srdeploy-batch" / "plan.json").exists()


def test_item13_more_workers_than_the_attached_cluster_fits_is_refused(cluster, model, images, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["batch", "-q", "-i", str(images / "im0.png"), "-o", str(out), "--model", str(model), "--tile", "16"]
    assert main(args + ["--workers", "3"]) == 1  # the module's cluster has 2 CPUs: a third actor would wait forever
    assert ("--workers 3 do not fit the Ray instance this process is attached to: each worker reserves 1 CPU "
            "(--threads-per-worker); its 1 node(s) have 2 CPU/0 GPU, room for 2; use --workers 2 or fewer"
            in capsys.readouterr().err)
    # item 15: refused before it started, so the same job runs without --resume
    assert not (out / ".srdeploy-batch" / "plan.json").exists()
    assert main(args + ["--workers", "2"]) == 0 and (out / "im0.png").is_file()


def test_item14_outdir_inside_the_recursive_input_tree_resumes(cluster, model, images, tmp_path):
    for case, out, extra in (("inside", "out", []), ("same", ".", ["--suffix", "_x2"])):  # OUTDIR in the tree; = it
        tree = tmp_path / case
        (tree / "sub").mkdir(parents=True)
        for name in ("im0.png", "sub/im5.png"):
            (tree / name).write_bytes((images / name).read_bytes())
        args = ["batch", "-q", "-i", str(tree), "-o", str(tree / out), "--model", str(model), "--tile", "16",
                "--recursive", *extra]
        assert main(args + ["--json", str(tmp_path / "s.json")]) == 0
        first = json.loads((tmp_path / "s.json").read_text())
        assert (first["done"], first["tasks"]) == (2, 2), first
        assert main(args + ["--resume", "--json", str(tmp_path / "s.json")]) == 0  # was: "the inputs differ"
        again = json.loads((tmp_path / "s.json").read_text())
        assert (again["skipped"], again["done"], again["tasks"]) == (2, 0, 2), again


def test_item15_batch_without_ray_leaves_no_plan(cluster, model, images, tmp_path):
    args = ["batch", "-q", "-i", str(images / "im0.png"), "-o", str(tmp_path / "out"), "--model", str(model),
            "--tile", "16"]
    proc = subprocess.run([sys.executable, "-c", NO_RAY, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "pip install 'srdeploy[cluster]'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / ".srdeploy-batch" / "plan.json").exists()
    assert main(args) == 0  # with Ray: the same command, no --resume needed


HOLD = """
import sys, time
from pathlib import Path
from srdeploy.runtime.jobs import JobFolder
with JobFolder(Path(sys.argv[1]), "plan.json").lock("-o out"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_batch_on_a_locked_outdir_is_refused_before_any_work(model, images, tmp_path, capsys):
    """Two batch jobs never write one OUTDIR: while another process holds its job folder, batch (with or
    without --resume) exits 1 naming that process, before Ray starts, and writes nothing."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / ".srdeploy-batch")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for extra in ([], ["--resume"]):
            t0 = time.monotonic()
            assert main(["batch", "-q", "-i", str(images), "-o", str(out), "--model", str(model), *extra]) == 1
            err = capsys.readouterr().err
            assert "another job is writing it" in err and f"pid {holder.pid}" in err, err
            assert time.monotonic() - t0 < 10
        assert sorted(p.name for p in out.rglob("*")) == [".srdeploy-batch", "lock"]
    finally:
        holder.kill()
        holder.wait()


def test_resume_refuses_another_model_copied_over_the_same_path(cluster, model, images, tmp_path, capsys):
    """The plan pins the model's content (sha256), not its path: a model replaced in place is refused on
    --resume, naming what changed, before anything is rewritten."""
    import shutil

    from srdeploy.runtime.open import default_model_path

    m = tmp_path / "m.onnx"
    shutil.copy(model, m)
    out = tmp_path / "out"
    args = ["batch", "-q", "-i", str(images / "im0.png"), "-o", str(out), "--model", str(m), "--workers", "1"]
    assert main(args) == 0
    before = (out / "im0.png").read_bytes()
    shutil.copy(default_model_path(), m)  # another model at the same path
    capsys.readouterr()
    assert main([*args, "--resume"]) == 1
    err = capsys.readouterr().err
    assert "--resume: the recorded job used different" in err and "model_sha256" in err, err
    assert (out / "im0.png").read_bytes() == before
