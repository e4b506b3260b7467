"""srdeploy video jobs under stress (issue 25): two jobs on one output, another model at the same path,
hostile file names, a damaged segment, truncated AVI files.

Sources are tiny synthetic videos made with the bundled ffmpeg; the model is the exact copy model
(``_video.write_copy_model``), so outputs are compared frame for frame.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srdeploy.cli import main
from srdeploy.runtime.jobs import JobFolder
from srdeploy.runtime.media import ffmpeg as ff
from srdeploy.runtime.media import segments as seg
from srdeploy.runtime.media.video import write_test_video
from srdeploy.runtime.open import open_session
from srdeploy.runtime.upscale import Upscaler

from _video import decode, framemd5, make, reference, write_copy_model

LOSSLESS = ["--codec", "libx264rgb", "--crf", "0"]  # exact output, so frames compare bit for bit


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    return write_copy_model(tmp_path_factory.mktemp("model") / "copy_x2.onnx")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """40 frames at 25 fps, 32x24, H.264 with B-frames and AAC."""
    return make(tmp_path_factory.mktemp("src") / "clip.mp4", "-f", "lavfi", "-i",
                "testsrc2=size=32x24:rate=25:duration=1.6", "-f", "lavfi", "-i", "sine=frequency=300:duration=1.6",
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory) -> Path:
    """Another 40 frames of the same size and rate, other pictures."""
    return make(tmp_path_factory.mktemp("src") / "other.mp4", "-f", "lavfi", "-i",
                "mandelbrot=size=32x24:rate=25", "-frames:v", "40", "-c:v", "libx264", "-pix_fmt", "yuv420p")


def video(*args: str) -> list[str]:
    return ["video", *args, "-q"]


def errors(err: str) -> list[str]:
    """stderr without the first (model) line."""
    return [ln for ln in err.splitlines() if not ln.startswith("model ")]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- item 1: one job per output
def test_a_second_job_on_the_same_output_is_refused_at_once_naming_the_first(copy_model, clip, tmp_path, capsys):
    out = tmp_path / "out.mkv"
    work = seg.work_folder(out)
    args = video("-i", str(clip), "-o", str(out), "--model", str(copy_model), "--tile", "0", *LOSSLESS)
    with JobFolder(work).lock(str(out)):  # this test process is the job running on out.mkv
        (work / "seg-00000.log").write_text("the running job's")
        before = {p.name: p.read_bytes() for p in work.iterdir()}
        assert main(args) == 1
        err = capsys.readouterr().err.splitlines()  # one line, before the model is opened
        assert len(err) == 1 and f"{out}: another job is writing it: pid {os.getpid()} " in err[0], err
        assert {p.name: p.read_bytes() for p in work.iterdir()} == before and not out.exists()  # nothing touched
    assert main(args) == 0  # the holder is gone: its lock file and logs (no finished segment) are no obstacle
    assert np.array_equal(decode(out), reference(clip))


def test_the_running_job_holds_its_folder_for_every_segment(copy_model, clip, tmp_path, monkeypatch):
    """While segments are made, another process (here another open file of the lock) cannot claim the
    folder: the job itself holds it, not only checks it before starting."""
    from srdeploy.runtime.jobs import JobLocked

    out = tmp_path / "out.mkv"
    held, real = [], seg.process_segment

    def checked(task, upscaler, **kwargs):
        with pytest.raises(JobLocked, match="another job is writing it"):
            JobFolder(seg.work_folder(out), seg.JOB_FILE).check_free(str(out))
        held.append(task)
        return real(task, upscaler, **kwargs)

    monkeypatch.setattr(seg, "process_segment", checked)
    assert main(video("-i", str(clip), "-o", str(out), "--model", str(copy_model), "--tile", "0",
                      "--segment-frames", "20", *LOSSLESS)) == 0
    assert len(held) >= 2 and np.array_equal(decode(out), reference(clip))


def test_a_lock_left_by_a_killed_job_does_not_block_resume(copy_model, clip, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.mkv"
    args = video("-i", str(clip), "-o", str(out), "--model", str(copy_model), "--tile", "0", "--segment-frames",
                 "10", *LOSSLESS)
    monkeypatch.setattr(seg, "finish_job", _failing_join)
    assert main(args) == 1
    monkeypatch.undo()
    lock = seg.work_folder(out) / "lock"
    lock.write_text(json.dumps({"pid": 999999, "command": "srdeploy video (killed)"}))  # a dead holder's
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert "reused 4 of 4 segments" in capsys.readouterr().err
    assert np.array_equal(decode(out), reference(clip)) and leftovers(tmp_path) == []


def _failing_join(job, **kwargs):
    raise ff.FFmpegError(f"{job.dst}: joining failed (planted)", "planted", None)


@pytest.mark.slow
def test_two_concurrent_jobs_on_one_output_exactly_one_wins_intact(copy_model, clip, other_clip, tmp_path):
    """Two `srdeploy video` processes started together on one output: one exits 0, the other 1 with
    one line having written nothing, and the output is frame-identical to a solo run of the winner."""
    settings = ["--model", str(copy_model), "--tile", "0", "--segment-frames", "1", *LOSSLESS, "-q"]
    solo = {}
    for name, src in (("a", clip), ("b", other_clip)):
        solo[name] = tmp_path / f"solo-{name}.mkv"
        assert main(["video", "-i", str(src), "-o", str(solo[name]), *settings]) == 0
    race = tmp_path / "race"
    race.mkdir()
    out = race / "out.mkv"
    procs = {name: subprocess.Popen([sys.executable, "-m", "srdeploy", "video", "-i", str(src), "-o", str(out),
                                     *settings], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, src in (("a", clip), ("b", other_clip))}
    done = {name: (p.wait(timeout=300), p.stderr.read()) for name, p in procs.items()}
    winners = [name for name, (rc, _) in done.items() if rc == 0]
    assert len(winners) == 1, done
    loser_rc, loser_err = done["b" if winners == ["a"] else "a"]
    lines = errors(loser_err)
    assert loser_rc == 1 and len(lines) == 1, done
    assert "another job is writing it" in lines[0] or "output exists" in lines[0], lines
    assert framemd5(out) == framemd5(solo[winners[0]])
    assert sorted(p.name for p in race.iterdir()) == ["out.mkv"]  # no work folder, no partial file


# --------------------------------------------------------------------------- item 3: the model's content
def test_resume_refuses_another_model_of_the_same_size_at_the_same_path(copy_model, clip, tmp_path, capsys,
                                                                        monkeypatch):
    model = tmp_path / "model.onnx"
    shutil.copy(copy_model, model)
    other = write_copy_model(tmp_path / "other.onnx", perm=(2, 0, 1))
    assert other.stat().st_size == model.stat().st_size and other.read_bytes() != model.read_bytes()
    out = tmp_path / "out.mkv"
    args = video("-i", str(clip), "-o", str(out), "--model", str(model), "--tile", "0", "--segment-frames", "10",
                 *LOSSLESS)
    monkeypatch.setattr(seg, "finish_job", _failing_join)
    assert main(args) == 1
    monkeypatch.undo()
    original = model.read_bytes()
    st = model.stat()
    model.write_bytes(other.read_bytes())  # another model, same path, same size, same mtime
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 1
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and "was made with different model_sha256;" in err[0], err
    assert len(list(seg.work_folder(out).glob("seg-*.mov"))) == 4  # kept for a resume with the right model
    model.write_bytes(original)
    assert main([*args, "--resume"]) == 0
    assert np.array_equal(decode(out), reference(clip))


# --------------------------------------------------------------------------- item 8: names ffmpeg never parses
@pytest.mark.parametrize("src_name, out_name", [
    ("it's.mp4", "o'10.mkv"),
    ("new\nline.mp4", "d'ir/o.mp4"),
    ("-x %d\\y.mp4", "-o %03d\\z.mkv"),
    ("ü \"q\" 日本.mp4", "ë'\nf/'x' %s.mkv"),
], ids=["quote", "newline-quoted-folder", "dash-percent-backslash", "non-ascii"])
def test_hostile_input_and_output_names(copy_model, clip, tmp_path, capsys, monkeypatch, src_name, out_name):
    monkeypatch.chdir(tmp_path)  # relative names, so a leading '-' reaches ffmpeg as it is
    shutil.copy(clip, tmp_path / src_name)
    out = Path(out_name)
    assert main(video(f"--input={src_name}", f"--output={out_name}", "--model", str(copy_model), "--tile", "0",
                      "--segment-frames", "16", *LOSSLESS)) == 0, capsys.readouterr().err
    assert np.array_equal(decode(tmp_path / out), reference(clip))
    assert [s.kind for s in ff.probe(tmp_path / out).streams] == ["video", "audio"]
    assert leftovers(tmp_path / out.parent) == []


def test_batch_video_tasks_take_hostile_names_too(copy_model, clip, tmp_path):
    """batch runs the same segment layer: a video named it's.mp4 is planned, processed and joined."""
    from srdeploy.runtime.batch import video as bv

    src = tmp_path / "in" / "it's 'quoted'.mp4"
    src.parent.mkdir()
    shutil.copy(clip, src)
    dst = tmp_path / "out" / "d'ir" / src.name
    with open_session(copy_model) as s:
        upscaler = Upscaler(s, tile=0)
        plan = bv.plan_video(str(src), str(dst), upscaler, str(copy_model), codec="libx264rgb", crf=0,
                             segment_frames=16)
        for task in plan["job"].tasks:
            bv.run_segment(task, upscaler, batch=1)
    bv.join_video(plan["job"])
    assert np.array_equal(decode(dst), reference(clip)) and leftovers(dst.parent) == []


def test_batch_leaves_a_video_that_srdeploy_video_is_writing_alone(copy_model, clip, tmp_path):
    from srdeploy.runtime.batch import video as bv
    from srdeploy.runtime.jobs import JobLocked

    dst = tmp_path / "out" / "clip.mp4"
    work = seg.work_folder(dst)
    with JobFolder(work).lock(str(dst)):
        (work / ".seg-00000.mov.abcd.tmp.mov").write_bytes(b"a segment being written")
        before = sorted(p.name for p in work.iterdir())
        with open_session(copy_model) as s, pytest.raises(JobLocked, match=f"^{dst}: another job is writing it"):
            bv.plan_video(str(clip), str(dst), Upscaler(s, tile=0), str(copy_model), codec=None, crf=None,
                          segment_frames=None)
        assert sorted(p.name for p in work.iterdir()) == before  # its partial segment is not "cleaned up"
    assert JobLocked in bv.input_errors()  # reported by name, not retried


def test_a_file_name_cannot_fake_probe_lines(clip, tmp_path):
    """ffmpeg prints the name as it is; a newline in it must not add streams or change the duration."""
    fake = tmp_path / "x\n  Duration: 01:00:00.00, start: 7.000000\n  Stream #0:9: Audio: mp3, 44100 Hz.mp4"
    shutil.copy(clip, fake)
    info = ff.probe(fake)
    assert [(s.index, s.kind) for s in info.streams] == [(0, "video"), (1, "audio")]
    assert info.duration < 2 and info.start < 1 and info.frame_size == (32, 24)


# --------------------------------------------------------------------------- item 10: damaged segments
def test_a_damaged_or_unrecorded_segment_is_redone_on_resume(copy_model, clip, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.mkv"
    args = video("-i", str(clip), "-o", str(out), "--model", str(copy_model), "--tile", "0", "--segment-frames", "8",
                 *LOSSLESS)
    monkeypatch.setattr(seg, "finish_job", _failing_join)
    assert main(args) == 1
    monkeypatch.undo()
    work = seg.work_folder(out)
    damaged = work / "seg-00002.mov"
    st = damaged.stat()
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # zeroed in the middle: same size, same mtime
    damaged.write_bytes(bytes(data))
    os.utime(damaged, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ff.count_packets(damaged, tmp_path / "p.log") == 8  # a packet count would not notice
    (work / "tasks" / "seg-00003.json").unlink()  # a run killed between the rename and the record
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert warnings == [
        f"warning: {out}: segment 2 (seg-00002.mov) does not match the checksum recorded when it was written "
        "(damaged); redoing it",
        f"warning: {out}: segment 3 (seg-00003.mov) has no recorded checksum (its run stopped before recording "
        "one); redoing it"]
    assert "reused 3 of 5 segments" in err
    assert np.array_equal(decode(out), reference(clip)) and not work.exists()


def test_segment_states_record_the_checksum(copy_model, clip, tmp_path):
    with open_session(copy_model) as s:
        upscaler = Upscaler(s, tile=0)
        source, settings = seg.probe_request(clip, tmp_path / "o.mkv")
        job = seg.plan_job(source, tmp_path / "o.mkv", 2, settings, segment_frames=20, work=tmp_path)
        task = job.tasks[1]
        assert seg.segment_problem(task) == ""
        seg.process_segment(task, upscaler)
    state = JobFolder(tmp_path).read_state("seg-00001")
    from srdeploy.runtime.metadata import sha256_file

    assert state["sha256"] == sha256_file(task.path) and state["frames"] == 20 and seg.segment_done(task)


# --------------------------------------------------------------------------- item 11: truncated AVI
@pytest.fixture(scope="module")
def avi(tmp_path_factory) -> Path:
    """8 frames of MJPEG in an AVI written by OpenCV (as a camera or an old tool would)."""
    return write_test_video(tmp_path_factory.mktemp("avi") / "cam.avi", width=38, height=30, frames=8, fps=12)


@pytest.mark.parametrize("where", ["header", "movi"])
def test_an_avi_cut_inside_its_header_is_one_clean_line(copy_model, avi, tmp_path, capfd, monkeypatch, where):
    """A relative name with a ':' ("take:2.avi", read as a protocol) makes OpenCV's FFmpeg backend
    give up and its own AVI parser print the damaged header's bytes: the command must not let
    OpenCV near the file (tile auto included)."""
    data = avi.read_bytes()
    cut = 200 if where == "header" else data.index(b"movi") + 8
    monkeypatch.chdir(tmp_path)
    src = Path(f"take:{where}.avi")
    src.write_bytes(data[:cut])
    assert main(video("-i", str(src), "-o", "out.mp4", "--model", str(copy_model))) == 1
    err = capfd.readouterr().err  # file descriptor 2: OpenCV's parser prints from C
    assert all(ln.isprintable() and "\ufffd" not in ln for ln in err.splitlines()), repr(err)
    lines = errors(err)
    assert len(lines) == 1 and lines[0].startswith(f"srdeploy video: error: {src}: "), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_an_avi_cut_mid_stream_gives_its_frames_with_a_warning(copy_model, avi, tmp_path, capfd):
    data = avi.read_bytes()
    src = tmp_path / "cut:12.avi"
    movi = data.index(b"movi")
    src.write_bytes(data[:movi + (len(data) - movi) // 2])  # half way through the frames
    out = tmp_path / "out.mkv"
    assert main(video("-i", str(src), "-o", str(out), "--model", str(copy_model), *LOSSLESS)) == 0
    err = errors(capfd.readouterr().err)
    frames = len(decode(out))
    assert 0 < frames < 8
    assert err[0] == (f"warning: {src}: the video stream is damaged or cut short (ffmpeg: "
                      f"{err[0].split('(ffmpeg: ')[1].split(')')[0]}); the output holds the {frames} frame(s) that decode")
    assert all(ln.isprintable() for ln in err) and len(err) == 2  # the warning, the summary
    with open_session(copy_model) as s:  # the batch's video plan carries the warning too
        from srdeploy.runtime.batch import video as bv

        plan = bv.plan_video(str(src), str(tmp_path / "b.mkv"), Upscaler(s, tile=0), str(copy_model), codec=None,
                             crf=None, segment_frames=None)
    assert any("damaged or cut short" in n for n in plan["notices"])
