"""srdeploy video on the bundled ffmpeg (runtime/media/ffmpeg.py, segments.py): streams, timing, segments."""

from __future__ import annotations

import pickle
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from srdeploy.runtime.media import ffmpeg as ff
from srdeploy.runtime.media import segments as seg
from srdeploy.runtime.open import open_session
from srdeploy.runtime.upscale import Upscaler

from _video import FFMPEG, decode, make, reference, write_copy_model  # noqa: E402


def stream_duration(path: Path, spec: str) -> float:
    """Duration of one stream (decoded) in seconds, from ffmpeg's framecrc timestamps."""
    r = subprocess.run([FFMPEG, "-v", "error", "-i", f"file:{path}", "-map", f"0:{spec}", "-c", "copy", "-f",
                        "framecrc", "-"], capture_output=True, text=True, check=True)
    tb = next(Fraction(ln.split(":")[1].strip()) for ln in r.stdout.splitlines() if ln.startswith("#tb"))
    rows = [ln.split(",") for ln in r.stdout.splitlines() if ln and not ln.startswith("#")]
    pts = [int(x[2]) for x in rows]
    return float((max(pts) + int(rows[pts.index(max(pts))][3]) - min(pts)) * tb)


@pytest.fixture(scope="module")
def copy_model(tmp_path_factory) -> Path:
    """The exact test model (``_video.write_copy_model``): nearest-neighbour x2, channels rotated."""
    pytest.importorskip("onnx")
    return write_copy_model(tmp_path_factory.mktemp("model") / "copy_x2.onnx")


@pytest.fixture(scope="module")
def upscaler(copy_model):
    with open_session(copy_model) as s:
        yield Upscaler(s, tile=0)


@pytest.fixture(scope="module")
def bframes_mp4(tmp_path_factory) -> Path:
    """20 frames of H.264 with B-frames at 24000/1001 fps, 32x24, stereo AAC, a title."""
    d = tmp_path_factory.mktemp("src")
    return make(d / "clip.mp4", "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=24000/1001:duration=0.834",
                "-f", "lavfi", "-i", "sine=frequency=440:duration=0.834", "-ac", "2", "-c:v", "libx264",
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-metadata", "title=clip")


def test_copy_model_reference_is_exact(upscaler):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    frame[0, 0], frame[1, 1] = 0, 255
    out = upscaler.upscale(frame, order="BGR")
    assert np.array_equal(out, frame.repeat(2, 0).repeat(2, 1)[..., [2, 0, 1]])
    assert out.min() == 0 and out.max() == 255  # the model passes the whole value range


def test_probe_lists_streams_and_timing(bframes_mp4, tmp_path):
    info = ff.probe(bframes_mp4)
    assert info.video == 0 and [s.kind for s in info.streams] == ["video", "audio"]
    assert info.audio[0].codec == "aac" and not info.is_still_image
    times = ff.frame_times(info, tmp_path / "p.log")
    assert (times.count, times.width, times.height) == (20, 32, 24)
    timing = ff.analyse_timing(times, info.start)
    assert timing.cfr and timing.rate == Fraction(24000, 1001)
    png = tmp_path / "still.png"
    import cv2

    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    assert ff.probe(png).is_still_image
    with pytest.raises(IsADirectoryError, match="is a folder"):
        ff.probe(tmp_path)


def test_matroska_millisecond_timestamps_keep_the_exact_rate(tmp_path):
    # Matroska stores 23.976 fps as 41/42 ms steps: still CFR at exactly 24000/1001
    mkv = make(tmp_path / "a.mkv", "-f", "lavfi", "-i", "testsrc2=size=16x16:rate=24000/1001:duration=2",
               "-c:v", "libx264", "-pix_fmt", "yuv420p")
    info = ff.probe(mkv)
    times = ff.frame_times(info, tmp_path / "p.log")
    assert times.tb == Fraction(1, 1000) and len(set(np.diff(times.pts))) > 1
    timing = ff.analyse_timing(times, info.start)
    assert timing.cfr and timing.rate == Fraction(24000, 1001)


def test_segment_decoder_seeks_to_the_exact_frame(bframes_mp4, tmp_path):
    # Segments start at any frame (not only keyframes) and must decode exactly those frames.
    info = ff.probe(bframes_mp4)
    full = decode(bframes_mp4)
    times = ff.frame_times(info, tmp_path / "p.log")
    job = seg.plan_job(info, tmp_path / "o.mp4", 2, ff.encoder_settings("o.mp4"), segment_frames=7, work=tmp_path)
    assert [(t.start, t.count) for t in job.tasks] == [(0, 7), (7, 7), (14, 6)]
    for t in job.tasks:
        dec = ff.FrameDecoder(info, times.width, times.height, t.seek, t.count, tmp_path / "d.log")
        got = np.stack(list(dec))
        dec.close()
        assert np.array_equal(got, full[t.start:t.start + t.count]), t.index
    # a task is a small picklable value (the Ray batch ships it to other machines)
    assert pickle.loads(pickle.dumps(job.tasks[1])) == job.tasks[1]


def test_segments_are_idempotent_and_join_exactly(upscaler, bframes_mp4, tmp_path):
    # Lossless RGB H.264: the joined output equals the per-frame model output bit for bit.
    info = ff.probe(bframes_mp4)
    settings = ff.encoder_settings("o.mkv", codec="libx264rgb", crf=0, source=info)
    job = seg.plan_job(info, tmp_path / "o.mkv", 2, settings, segment_frames=8, work=tmp_path)
    for t in reversed(job.tasks):  # any order
        seg.process_segment(t, upscaler)
    mtimes = [t.path.stat().st_mtime_ns for t in job.tasks]
    assert seg.process_segment(job.tasks[0], upscaler) == job.tasks[0].path  # reused, not rewritten
    assert [t.path.stat().st_mtime_ns for t in job.tasks] == mtimes
    out = tmp_path / "joined.mkv"
    seg.join_segments(job, out)
    got = decode(out)
    assert got.shape == (20, 48, 64, 3)
    assert np.array_equal(got, reference(bframes_mp4))


def test_vfr_source_keeps_frames_and_duration(upscaler, tmp_path):
    # Frames 0-9 at 1/20 s, then 10-19 at 1/5 s: a strongly variable rate, made by ffmpeg itself.
    src = make(tmp_path / "vfr.mkv", "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=20:duration=1",
               "-vf", "setpts='if(lt(N,10),N/20,0.5+(N-10)/5)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
               "-pix_fmt", "yuv420p")
    info = ff.probe(src)
    times = ff.frame_times(info, tmp_path / "p.log")
    timing = ff.analyse_timing(times, info.start)
    assert not timing.cfr and times.count == 20
    out = tmp_path / "out.mp4"
    stats = seg.upscale_video_ffmpeg(upscaler, src, out, segment_frames=6, progress=False, log=lambda s: None)
    assert stats.frames == 20 and any("variable frame rate" in n for n in stats.notices)
    src_dur, out_dur = stream_duration(src, "v:0"), stream_duration(out, "v:0")
    assert abs(out_dur - src_dur) <= 1 / float(timing.rate)
    assert len(decode(out)) == 20


def test_mkv_streams_all_kept_and_mp4_converts_or_drops_with_notice(upscaler, tmp_path):
    d = tmp_path
    (d / "s.srt").write_text("1\n00:00:00,000 --> 00:00:00,400\nHello\n\n2\n00:00:00,500 --> 00:00:00,900\nWorld\n")
    (d / "meta.txt").write_text(";FFMETADATA1\ntitle=Movie\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\n"
                                "title=One\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n")
    (d / "font.ttf").write_bytes(b"not really a font")
    src = make(d / "multi.mkv", "-f", "lavfi", "-i", "testsrc2=size=16x12:rate=10:duration=1",
               "-f", "lavfi", "-i", "sine=f=440:d=1", "-f", "lavfi", "-i", "sine=f=660:d=1", "-i", str(d / "s.srt"),
               "-i", str(d / "meta.txt"), "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map_metadata", "4",
               "-map_chapters", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt",
               "-attach", str(d / "font.ttf"), "-metadata:s:t", "mimetype=font/ttf", "-metadata:s:a:1",
               "language=fra")
    out = d / "out.mkv"
    stats = seg.upscale_video_ffmpeg(upscaler, src, out, segment_frames=4, progress=False, log=lambda s: None)
    info = ff.probe(out)
    assert [s.kind for s in info.streams] == ["video", "audio", "audio", "subtitle", "attachment"]
    assert info.streams[2].language == "fra" and info.chapters == 2 and stats.audio == "copied"
    assert stats.notices == []
    meta = subprocess.run([FFMPEG, "-v", "error", "-i", f"file:{out}", "-f", "ffmetadata", "-"], capture_output=True,
                          text=True, check=True).stdout
    assert "title=Movie" in meta and "title=Two" in meta
    # MP4 holds neither SRT nor attachments: subtitles become mov_text, the font is dropped, each said once
    out4 = d / "out.mp4"
    stats = seg.upscale_video_ffmpeg(upscaler, src, out4, segment_frames=4, progress=False, log=lambda s: None)
    info = ff.probe(out4)
    # (MP4 stores chapters in a text track that ffmpeg lists as a data stream)
    assert [(s.kind, s.codec) for s in info.streams if s.kind != "data"] == [
        ("video", "h264"), ("audio", "aac"), ("audio", "aac"), ("subtitle", "mov_text")]
    assert info.chapters == 2
    assert len(stats.notices) == 2
    assert any("re-encoded to mov_text" in n for n in stats.notices)
    assert any("attachment" in n and "dropped" in n for n in stats.notices)


def test_colour_tags_round_trip(upscaler, tmp_path):
    # BT.709-tagged source: decoded with BT.709, re-encoded with BT.709 and tagged so; a matrix
    # mismatch on either side would move saturated colours by many levels.
    src = make(tmp_path / "c709.mp4", "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=10:duration=0.5",
               "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-c:v", "libx264", "-qp", "0", "-pix_fmt",
               "yuv444p", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
               "-color_range", "tv")
    out = tmp_path / "out.mkv"
    seg.upscale_video_ffmpeg(upscaler, src, out, codec="h264", crf=0, pix_fmt="yuv444p", progress=False,
                             log=lambda s: None)
    info = ff.probe(out)
    assert (info.colorspace, info.color_range) == ("bt709", "tv")
    diff = np.abs(decode(out).astype(int) - reference(src).astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.5  # limited-range 8-bit YUV rounding; a matrix mismatch is >10


def test_encoder_settings_defaults_and_refusals():
    avail = {"libx264", "libx265", "libsvtav1", "ffv1", "libx264rgb"}
    s = ff.encoder_settings("a.mp4", available=avail)
    assert (s.encoder, s.crf, s.preset, s.pix_fmt) == ("libx264", 18, "medium", "yuv420p")
    assert ff.encoder_settings("a.mkv", available=avail).encoder == "libx264"
    assert ff.encoder_settings("a.webm", available=avail).encoder == "libsvtav1"
    assert ff.encoder_settings("a.mp4", codec="hevc", crf=22, pix_fmt="yuv420p10le", available=avail).args()[:6] == \
        ["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-crf", "22"]
    with pytest.raises(ValueError, match="lossless"):
        ff.encoder_settings("a.mkv", codec="ffv1", crf=10, available=avail)
    with pytest.raises(ValueError, match="no encoder"):
        ff.encoder_settings("a.mkv", codec="nosuch", available=avail)
    with pytest.raises(ValueError, match="unknown video extension"):
        ff.encoder_settings("a.xyz", available=avail)


def test_encode_fps_is_measured(tmp_path):
    fps = ff.encode_fps(64, 48, ff.encoder_settings("a.mp4"), frames=10, work=tmp_path)
    assert fps > 0 and list(tmp_path.glob("encode-fps.mov")) == []


def test_video_and_image_onto_a_full_disk_fail_cleanly(copy_model, full_disk, tmp_path, capsys):
    """issue 11 item 1: one line naming the cause, exit 1, nothing under the output name, old output kept."""
    import cv2

    from srdeploy.cli import main

    # image: 400x400 noise -> 800x800 PNG (~1.9 MB) onto the 1 MiB disk
    img = tmp_path / "noise.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8))
    assert main(["upscale", "-i", str(img), "-o", str(full_disk / "big.png"), "--model", str(copy_model),
                 "--tile", "0", "-q"]) == 1
    err = capsys.readouterr().err
    assert "big.png" in err and ("No space left on device" in err or "disk full" in err)
    assert not (full_disk / "big.png").exists()
    assert list(full_disk.iterdir()) == []
    # video: incompressible noise, lossless FFV1: 40 frames of 192x144 need ~3 MB
    src = make(tmp_path / "noise.mkv", "-f", "lavfi", "-i",
               "nullsrc=s=96x72:r=10:d=4,geq=random(1)*255:random(2)*255:random(3)*255",
               "-c:v", "ffv1", "-pix_fmt", "yuv444p")
    out = full_disk / "out.mkv"
    out.write_bytes(b"previous result")
    assert main(["video", "-i", str(src), "-o", str(out), "--model", str(copy_model), "--tile", "0", "--codec",
                 "ffv1", "--overwrite", "--segment-frames", "10", "-q"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith("model ")]
    assert len(err) == 1 and "No space left on device" in err[0] and str(out) in err[0] and "ffmpeg log" in err[0]
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in full_disk.iterdir()) == sorted([out.name, seg.work_folder(out).name])
    assert not list(seg.work_folder(out).glob(".seg-*"))  # no partial segment left


# --------------------------------------------------------------------------- the command
def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "srdeploy", "video", *args]


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """40 frames at 25 fps, 32x24, H.264 with B-frames and AAC: 20 segments of 2 frames."""
    d = tmp_path_factory.mktemp("long")
    return make(d / "long.mp4", "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=25:duration=1.6", "-f", "lavfi",
                "-i", "sine=frequency=300:duration=1.6", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")


def _segments(work: Path) -> dict[str, tuple[int, int]]:
    """Finished segments: renamed into place AND recorded (a kill between the two redoes it)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in work.glob("seg-*.mov")
            if (work / "tasks" / f"{p.stem}.json").exists()}


def _run_until(cmd: list[str], work: Path, n: int, timeout: float = 120) -> dict[str, tuple[int, int]]:
    """Start ``cmd``, SIGKILL it once ``work`` holds at least ``n`` finished segments; return them."""
    import signal
    import time

    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while len(_segments(work)) < n:
            assert p.poll() is None, f"finished before it could be killed: {p.stderr.read().decode()[-500:]}"
            assert time.monotonic() - t0 < timeout
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    return _segments(work)


@pytest.mark.slow
def test_sigkill_then_resume_reuses_finished_segments(copy_model, long_clip, tmp_path):
    out = tmp_path / "out.mkv"
    work = seg.work_folder(out)
    args = ["-i", str(long_clip), "-o", str(out), "--model", str(copy_model), "--tile", "0", "--codec", "libx264rgb",
            "--crf", "0", "--segment-frames", "2", "-q"]
    first = _run_until(cli(*args), work, 3)
    assert not out.exists()
    # without --resume the unfinished run is not silently thrown away
    r = subprocess.run(cli(*args), capture_output=True, text=True)
    assert r.returncode == 1 and "--resume" in r.stderr
    # resume, killed again after it finished one more segment: the first ones were not rewritten
    second = _run_until(cli(*args, "--resume"), work, len(first) + 1)
    assert all(second[name] == first[name] for name in first), (first, second)
    r = subprocess.run(cli(*args, "--resume"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"reused {len(second)} of 20 segments" in r.stderr
    assert not work.exists()
    got = decode(out)
    assert len(got) == 40 and np.array_equal(got, reference(long_clip))
    assert [s.kind for s in ff.probe(out).streams] == ["video", "audio"]


def test_h264_mp4_with_stereo_aac(copy_model, bframes_mp4, tmp_path, capsys):
    from srdeploy.cli import main

    out = tmp_path / "out.mp4"
    assert main(["video", "-i", str(bframes_mp4), "-o", str(out), "--model", str(copy_model), "--tile", "0", "-q"]) == 0
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"model {copy_model}") and "onnxruntime" in first and "cpu" in first and "tile" in first
    assert "audio dropped" not in err
    info = ff.probe(out)
    assert [(s.kind, s.codec) for s in info.streams] == [("video", "h264"), ("audio", "aac")]
    assert "stereo" in info.streams[1].text
    times = ff.frame_times(info, tmp_path / "p.log")
    assert times.count == 20 and ff.analyse_timing(times, info.start).rate == Fraction(24000, 1001)
    frame = 1001 / 24000
    assert abs(stream_duration(out, "a:0") - stream_duration(bframes_mp4, "a:0")) <= frame
    assert abs(stream_duration(out, "v:0") - stream_duration(bframes_mp4, "v:0")) <= frame
    got, want = decode(out).astype(float), reference(bframes_mp4).astype(float)
    assert got.shape == want.shape == (20, 48, 64, 3)
    assert np.abs(got - want).mean() < 3.0  # CRF 18 4:2:0: a few 8-bit levels
    assert not list(tmp_path.glob(".*"))  # no work folder or partial file left


def test_bad_inputs_and_outputs_are_one_line(copy_model, bframes_mp4, tmp_path, capsys):
    from srdeploy.cli import main

    import cv2

    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.zeros((8, 8, 3), np.uint8))
    empty = tmp_path / "zero.avi"  # a valid container without a single frame
    cv2.VideoWriter(str(empty), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32)).release()
    cases = [(["-i", str(tmp_path), "-o", str(tmp_path / "o.mp4")], "is a folder"),
             (["-i", str(empty), "-o", str(tmp_path / "o.mp4")], "no decodable video frames"),
             (["-i", str(still), "-o", str(tmp_path / "o.mp4")], "srdeploy upscale"),
             (["-i", str(bframes_mp4), "-o", str(tmp_path / "o.mkv"), "--codec", "ffv1", "--crf", "3"], "lossless")]
    for args, message in cases:
        assert main(["video", *args, "--model", str(copy_model), "-q"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and len([ln for ln in err if "error" in ln]) == 1, err
    assert not list(tmp_path.glob(".*"))  # no work folder or partial file left behind


def test_unwritable_output_folder_says_permission_denied(copy_model, bframes_mp4, tmp_path, unprivileged):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cmd = unprivileged(cli("-i", str(bframes_mp4), "-o", str(ro / "o.mp4"), "--model", str(copy_model), "-q"))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 1
    assert "permission denied" in r.stderr and str(ro) in r.stderr, r.stderr
    assert list(ro.iterdir()) == []


# --------------------------------------------------------------------------- containers (issue 24 item 7)
def _avi_clip(path: Path) -> Path:
    """12 frames of MJPEG with PCM audio in AVI, 32x24 at 12 fps: an old camera's file."""
    return make(path, "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=12:duration=1", "-f", "lavfi", "-i",
                "sine=frequency=330:duration=1", "-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p",
                "-c:a", "pcm_s16le")


def test_avi_in_avi_out_by_default(copy_model, tmp_path, capsys):
    """`srdeploy video -i x.avi -o y.avi` worked with the OpenCV encoder and must work by default."""
    from srdeploy.cli import main

    src = _avi_clip(tmp_path / "x.avi")
    out = tmp_path / "y.avi"
    assert main(["video", "-i", str(src), "-o", str(out), "--model", str(copy_model), "--tile", "0", "-q"]) == 0
    assert "libx264" in capsys.readouterr().err
    info = ff.probe(out)
    assert info.format == "avi"
    assert [(s.kind, s.codec) for s in info.streams] == [("video", "h264"), ("audio", "pcm_s16le")]
    got, want = decode(out).astype(float), reference(src).astype(float)
    assert got.shape == want.shape == (12, 48, 64, 3)
    assert np.abs(got - want).mean() < 3.0  # CRF 18 4:2:0: a few 8-bit levels
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize("ext, muxer, codec", [(".ts", "mpegts", "h264"), (".flv", "flv", "h264"),
                                               (".mpg", "mpeg", "mpeg2video"), (".wmv", "asf", "wmv2"),
                                               (".m4v", "mov,mp4,m4a,3gp,3g2,mj2", "h264")])
def test_every_container_ffmpeg_writes_works_by_default(upscaler, bframes_mp4, tmp_path, ext, muxer, codec):
    out = tmp_path / f"out{ext}"
    stats = seg.upscale_video_ffmpeg(upscaler, bframes_mp4, out, segment_frames=8, progress=False, log=lambda s: None)
    info = ff.probe(out)
    assert info.format == muxer and info.streams[info.video].codec == codec
    assert stats.frames == 20 and len(info.audio) == 1  # the AAC track kept (re-encoded where needed)
    got, want = decode(out).astype(float), reference(bframes_mp4).astype(float)
    assert got.shape == want.shape == (20, 48, 64, 3)
    assert np.abs(got - want).mean() < 12.0  # MPEG-2/WMV at q 3 on a 64x48 test pattern


@pytest.mark.parametrize("args, message", [
    (["--codec", "h264", "-o", "{d}/o.webm"], "webm container cannot hold libx264"),
    (["--codec", "mpeg4", "-o", "{d}/o.ts"], "mpegts container cannot hold mpeg4"),
    (["--codec", "h264", "-o", "{d}/o.mpg"], "holds only mpeg1video, mpeg2video"),
    (["--pix-fmt", "rgb24", "-o", "{d}/o.mp4"], "encoder libx264 cannot write it"),
    (["--crf", "52", "-o", "{d}/o.mkv"], "out of range for libx264 (0-51"),
    (["--codec", "nosuch", "-o", "{d}/o.mkv"], "no encoder 'nosuch'"),
    (["-o", "{d}/o.xyz"], "unknown video extension '.xyz'"),
    (["--encoder", "opencv", "--codec", "ZZZZ", "-o", "{d}/o.avi"], "cannot encode FourCC 'ZZZZ'"),
], ids=["webm-h264", "ts-mpeg4", "mpg-h264", "pix-fmt", "crf", "codec", "extension", "opencv-fourcc"])
def test_bad_output_settings_fail_before_the_model_is_opened(copy_model, bframes_mp4, tmp_path, capsys, monkeypatch,
                                                              args, message):
    import srdeploy.runtime.open as open_mod
    from srdeploy.cli import main

    def no_model(*a, **k):
        raise AssertionError("the model was opened before the output settings were checked")

    monkeypatch.setattr(open_mod, "open_session", no_model)
    argv = ["video", "-i", str(bframes_mp4), "--model", str(copy_model), "-q"] + [a.format(d=tmp_path) for a in args]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0] and message in err[0], err
    assert list(tmp_path.iterdir()) == []  # no output, no work folder


def test_failure_cause_skips_ffmpegs_wind_down():
    tail = ("[h264_nvenc @ 0x55b5c394a580] Cannot load libcuda.so.1\n"
            "[vost#0:0/h264_nvenc @ 0x55b5c3949ac0] [enc:h264_nvenc @ 0x55b5c394a480] Error while opening encoder - "
            "maybe incorrect parameters such as bit_rate, rate, width or height.\n"
            "[vf#0:0 @ 0x55b5c3966500] Task finished with error code: -1 (Operation not permitted)\n"
            "[out#0/mov @ 0x55b5c3948d40] Nothing was written into output file, because at least one of its "
            "streams received no packets.\n")
    assert ff.failure_cause(tail) == "Cannot load libcuda.so.1"
    assert ff.failure_cause("x\nav_interleaved_write_frame(): No space left on device\nConversion failed!") == \
        "No space left on device"


def test_resume_refuses_other_settings_and_names_them(upscaler, bframes_mp4, tmp_path):
    """A work folder made with other settings is never mixed into this run: refused, naming what changed."""
    out = tmp_path / "out.mkv"
    work = seg.work_folder(out)
    work.mkdir()
    source, settings = seg.probe_request(bframes_mp4, out)
    job = seg.plan_job(source, out, 2, settings, segment_frames=8, work=work)
    seg.pin_job(job, {"model": "m.onnx", "tile": 0}, refusal="x", hint="y")
    seg.process_segment(job.tasks[0], upscaler)
    with pytest.raises(ValueError, match=r"--resume: the unfinished run in .* was made with different segments, "
                                         r"settings; rerun it with the same settings"):
        seg.upscale_video_ffmpeg(upscaler, bframes_mp4, out, crf=20, segment_frames=7, resume=True,
                                 progress=False, fingerprint={"model": "m.onnx", "tile": 0})
    assert job.tasks[0].path.is_file()  # the finished segment is kept for a resume with the first settings
    stats = seg.upscale_video_ffmpeg(upscaler, bframes_mp4, out, segment_frames=8, resume=True, progress=False,
                                     fingerprint={"model": "m.onnx", "tile": 0}, log=lambda s: None)
    assert stats.reused == 1 and stats.frames == 20 and not work.exists()


def test_batch_refuses_a_container_codec_mismatch_before_any_worker(copy_model, bframes_mp4, tmp_path, capsys,
                                                                    monkeypatch):
    """batch: output settings are checked per container by the driver; no Ray, no model for a refused video."""
    import shutil

    import srdeploy.runtime.batch.driver as driver
    from srdeploy.cli import main

    def no_ray(*args):
        raise AssertionError("Ray was started for a job whose every task was refused")

    monkeypatch.setattr(driver, "_start_ray", no_ray)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(bframes_mp4, src / "a.webm")  # the output keeps the container: webm holds no H.264
    out = tmp_path / "out"
    assert main(["batch", "-q", "-i", str(src), "-o", str(out), "--model", str(copy_model), "--codec", "h264",
                 "--json", str(tmp_path / "s.json")]) == 1
    err = capsys.readouterr().err
    assert f"{src / 'a.webm'}: the webm container cannot hold libx264 video" in err
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["failed"] == 1 and summary["failures"][0]["input"] == str(src / "a.webm")
    assert not (out / "a.webm").exists()
