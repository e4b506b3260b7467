"""srdeploy video: pipelined OpenCV decode | upscale | encode (runtime/media/video.py, runtime/cli/video.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from srdeploy.cli import main  # noqa: E402
from srdeploy.runtime.media import ffmpeg as ff  # noqa: E402
from srdeploy.runtime.open import open_session  # noqa: E402
from srdeploy.runtime.upscale import Upscaler  # noqa: E402
from srdeploy.runtime.media.pipeline import upscale_frames  # noqa: E402
from srdeploy.runtime.media.video import probe_video, upscale_video, write_test_video  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A real tiny SRResNet x4 (2 blocks, 16 channels, non-trivial BN stats), BN folded, as ONNX."""
    torch = pytest.importorskip("torch")
    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet, receptive_radius

    torch.manual_seed(0)
    model = SRResNet(scale=4, num_blocks=2, channels=16).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_onnx(fuse_bn(model), path)
    add_metadata(path, ModelInfo(scale=4, receptive_radius=receptive_radius(model), arch="SRResNet",
                                 arch_kwargs={"scale": 4, "num_blocks": 2, "channels": 16}))
    return path


@pytest.fixture(scope="module")
def session(tiny_model):
    with open_session(tiny_model) as s:
        yield s


@pytest.fixture(scope="module")
def odd_video(tmp_path_factory) -> Path:
    """8 frames, 37x29 (odd, so not a multiple of any tile), moving pattern, 12 fps, MJPEG .avi."""
    return write_test_video(tmp_path_factory.mktemp("src") / "odd.avi", width=37, height=29, frames=8, fps=12)


def read_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def reference(upscaler: Upscaler, src: Path) -> list[np.ndarray]:
    """Per-frame Upscaler.upscale of the decoded input, through the RGB contract, back to BGR."""
    return [cv2.cvtColor(upscaler.upscale(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)), cv2.COLOR_RGB2BGR)
            for f in read_frames(src)]


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name or ".audio" in p.name]


def test_output_matches_per_frame_upscale_tiled(session, odd_video, tmp_path):
    # tile 16 < 37x29: every frame is tiled; FFV1 is lossless, so decoded output == reference exactly.
    up = Upscaler(session, tile=16, batch=2)
    out = tmp_path / "out.mkv"
    stats = upscale_video(up, odd_video, out, progress=False, audio=False)
    info_in, info_out = probe_video(odd_video), probe_video(out)
    assert (info_in.width, info_in.height, info_in.frame_count) == (37, 29, 8)
    assert (info_out.width, info_out.height) == (148, 116)
    assert info_out.frame_count == 8 and stats.frames == 8
    assert info_out.fps == pytest.approx(info_in.fps) and info_in.fps == pytest.approx(12.0)
    assert stats.codec == "FFV1" and stats.audio == "disabled"
    got = read_frames(out)
    want = reference(up, odd_video)
    assert len(got) == len(want) == 8
    for g, w in zip(got, want):
        assert g.shape == w.shape == (116, 148, 3)
        assert np.array_equal(g, w)
    # the frames really differ (a moving pattern), so a frame-order bug would show
    assert not np.array_equal(got[0], got[1])
    assert no_leftovers(tmp_path) == []


def test_whole_frame_path_equals_upscaler_exactly(session, odd_video, tmp_path):
    # tile 0, batch 1: frames take the pipeline's own pre/post-processing (decoder and encoder
    # threads); it must be bit-identical to Upscaler.upscale.
    up = Upscaler(session, tile=0)
    out = tmp_path / "whole.mkv"
    upscale_video(up, odd_video, out, progress=False, audio=False)
    got, want = read_frames(out), reference(up, odd_video)
    assert len(got) == 8 and all(np.array_equal(g, w) for g, w in zip(got, want))


def test_frame_batching_equals_single_frames(session, odd_video, tmp_path):
    # tile 0: whole frames, stacked 3 per inference call (3 + 3 + 2); lossless png codec in .avi.
    up = Upscaler(session, tile=0, batch=3)
    out = tmp_path / "batched.avi"
    stats = upscale_video(up, odd_video, out, codec="png ", batch=3, progress=False, audio=False)
    assert stats.frames == 8
    got = read_frames(out)
    want = reference(Upscaler(session, tile=0), odd_video)
    assert len(got) == 8
    # batched convolutions may round differently from single ones: allow one 8-bit level
    assert max(int(np.abs(g.astype(int) - w.astype(int)).max()) for g, w in zip(got, want)) <= 1


def test_upscale_frames_orders_and_batches(session):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (9, 11, 3), dtype=np.uint8) for _ in range(5)]
    up = Upscaler(session, tile=0, batch=4)
    single = [up.upscale(f) for f in frames]
    batched = upscale_frames(up, frames)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(batched, single))
    bgr = upscale_frames(up, [f[:, :, ::-1].copy() for f in frames], order="BGR")
    assert all(np.abs(a[:, :, ::-1].astype(int) - b.astype(int)).max() <= 1 for a, b in zip(bgr, single))


@pytest.fixture(scope="module")
def smooth_session(tmp_path_factory):
    """A range-covering x4 model with smooth outputs (tests/_models.py): what a lossy codec can keep.

    The tiny random model above outputs grey levels 0-30, where an all-black frame, the previous
    frame or swapped channels all stay within a few levels of the truth.
    """
    pytest.importorskip("torch")
    from _models import export_spread_model

    path = export_spread_model(tmp_path_factory.mktemp("smooth") / "smooth_x4.onnx", scale=4, smooth=True)
    with open_session(path) as s:
        yield s


def test_lossy_default_codec_mp4(smooth_session, tmp_path):
    # Source: unrelated smooth colour fields, one per frame, so every frame's output differs a lot
    # from the previous one, from its channel swap and from black.
    src = tmp_path / "in.mp4"
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(src), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 25, (32, 24))
    for _ in range(6):
        writer.write(cv2.resize(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (32, 24),
                                interpolation=cv2.INTER_CUBIC))
    writer.release()
    out = tmp_path / "out.mp4"
    up = Upscaler(smooth_session, tile=0)
    stats = upscale_video(up, src, out, progress=False, audio=False)
    info = probe_video(out)
    assert (stats.codec, info.width, info.height, info.frame_count) == ("mp4v", 128, 96, 6)
    assert info.fps == pytest.approx(25.0)
    got, want = read_frames(out), reference(up, src)
    assert len(got) == 6
    assert 90 < np.mean(want) < 170 and np.std(want) > 40  # outputs cover the range

    # mp4v is lossy (DCT blocks, 4:2:0 chroma): compare what it keeps, the image blurred over a few
    # pixels (measured: mean abs 2.5 levels against 22+ for the previous frame, 37+ for swapped
    # channels), and the raw pixels loosely (measured 8.5 levels).
    def blur(img):
        return cv2.GaussianBlur(img.astype(np.float32), (0, 0), 2)

    def err(a, b):
        return float(np.abs(blur(a) - blur(b)).mean())

    for i, (g, w) in enumerate(zip(got, want)):
        wrong = [want[i - 1] if i else want[1], np.ascontiguousarray(w[..., ::-1]), np.zeros_like(w)]
        e = err(g, w)
        assert e < 4.0, (i, e)
        assert all(e < 0.25 * err(g, other) for other in wrong), (i, e, [err(g, o) for o in wrong])
        assert np.abs(g.astype(float) - w).mean() < 12.0


def test_source_without_frame_count(session, tmp_path):
    # A raw MJPEG stream has no container index: OpenCV reports a meaningless frame count.
    raw = tmp_path / "raw.mjpeg"
    frames = [cv2.imencode(".jpg", np.full((20, 24, 3), 40 * i, np.uint8))[1].tobytes() for i in range(5)]
    raw.write_bytes(b"".join(frames))
    assert probe_video(raw).frame_count is None
    out = tmp_path / "out.mkv"
    stats = upscale_video(Upscaler(session, tile=0), raw, out, progress=False, audio=False)
    assert stats.frames == 5 and probe_video(out).frame_count == 5


def test_truncated_video_warns_and_keeps_decoded_frames(session, odd_video, tmp_path):
    data = odd_video.read_bytes()
    bad = tmp_path / "truncated.avi"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.mkv"
    messages: list[str] = []
    stats = upscale_video(Upscaler(session, tile=0), bad, out, progress=False, audio=False, log=messages.append)
    assert 0 < stats.frames < 8
    assert any("declares 8" in m and "truncated" in m for m in messages), messages
    assert probe_video(out).frame_count == stats.frames


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 50,
                                     bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))],
                         ids=["empty", "text", "random"])
def test_empty_or_corrupt_video_fails_clearly(tiny_model, tmp_path, capsys, content):
    src = tmp_path / "broken.mp4"
    src.write_bytes(content)
    out = tmp_path / "out.mp4"
    rc = main(["video", "-i", str(src), "-o", str(out), "--model", str(tiny_model), "-q"])
    err = capsys.readouterr().err
    assert rc == 1
    assert str(src) in err and "cannot open video" in err
    assert ("empty (0 bytes)" in err) == (content == b"")
    assert not out.exists() and no_leftovers(tmp_path) == []


def test_video_without_frames_fails_clearly(session, tmp_path):
    src = tmp_path / "zero.avi"
    w = cv2.VideoWriter(str(src), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    w.release()
    with pytest.raises(ValueError, match="no decodable video frames"):
        upscale_video(Upscaler(session), src, tmp_path / "out.mp4", progress=False)
    assert not (tmp_path / "out.mp4").exists()


def test_missing_input_and_existing_output(tiny_model, odd_video, tmp_path, capsys):
    out = tmp_path / "out.mkv"
    assert main(["video", "-i", str(tmp_path / "nope.mp4"), "-o", str(out), "--model", str(tiny_model)]) == 1
    assert "does not exist" in capsys.readouterr().err
    out.write_bytes(b"keep me")
    assert main(["video", "-i", str(odd_video), "-o", str(out), "--model", str(tiny_model), "-q"]) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    rc = main(["video", "-i", str(odd_video), "-o", str(out), "--model", str(tiny_model), "-q", "--overwrite",
               "--tile", "16", "--batch", "2", "--no-audio"])
    assert rc == 0
    assert probe_video(out).frame_count == 8 and "8 frames 148x116" in capsys.readouterr().err
    with pytest.raises(ValueError, match="overwrite the input"):
        upscale_video(Upscaler(open_session(tiny_model)), odd_video, odd_video, overwrite=True, progress=False)


def test_unavailable_codec_is_an_error(session, odd_video, tmp_path):
    with pytest.raises(ValueError, match="FourCC"):
        upscale_video(Upscaler(session), odd_video, tmp_path / "o.mp4", codec="h264x", progress=False)
    with pytest.raises(RuntimeError, match="cannot encode"):
        upscale_video(Upscaler(session), odd_video, tmp_path / "o.mkv", codec="ZZZZ", progress=False)
    assert no_leftovers(tmp_path) == [] and not (tmp_path / "o.mkv").exists()


def test_ctrl_c_leaves_no_partial_output(session, odd_video, tmp_path, monkeypatch):
    out = tmp_path / "out.mkv"
    out.write_bytes(b"previous result")  # replaced only by a finished run
    calls = {"n": 0}
    real = session.infer

    def interrupted(x):
        calls["n"] += 1
        if calls["n"] == 3:  # as if Ctrl-C arrived during the third inference
            raise KeyboardInterrupt
        return real(x)

    monkeypatch.setattr(session, "infer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upscale_video(Upscaler(session, tile=0), odd_video, out, overwrite=True, progress=False, audio=False)
    assert out.read_bytes() == b"previous result"
    assert no_leftovers(tmp_path) == []
    import threading

    assert not [t for t in threading.enumerate() if t.name.startswith("srdeploy-")]


def test_opencv_encoder_warns_about_audio_only_when_there_is_audio(session, odd_video, tmp_path):
    # the bundled ffmpeg is always there: a silent source gives "none" and no warning at all
    messages: list[str] = []
    stats = upscale_video(Upscaler(session, tile=0), odd_video, tmp_path / "o.mkv", progress=False,
                          log=messages.append)
    assert stats.audio == "none" and messages == []


def _ffmpeg() -> str:
    return ff.ffmpeg_exe()


def has_audio(path: Path) -> bool:
    return bool(ff.probe(path).audio)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_ffmpeg_copies_audio(session, tmp_path, ext):
    ffmpeg = _ffmpeg()
    src = tmp_path / f"with_audio{ext}"
    # 1 s of 16x12 test video at 10 fps with a sine tone, made by ffmpeg itself (argument list, no shell)
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=16x12:rate=10:duration=1",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:v", "mpeg4", "-c:a", "aac",
                    "-pix_fmt", "yuv420p", str(src)], check=True)
    assert has_audio(src)
    out = tmp_path / f"out{ext}"
    stats = upscale_video(Upscaler(session, tile=0), src, out, progress=False)
    assert stats.audio in ("copied", "re-encoded")
    assert has_audio(out)
    info = probe_video(out)
    assert (info.width, info.height, info.frame_count) == (64, 48, 10)
    assert no_leftovers(tmp_path) == []
    # a source without audio: nothing to copy, and no warning needed
    silent = write_test_video(tmp_path / "silent.mp4", width=16, height=12, frames=3)
    assert upscale_video(Upscaler(session, tile=0), silent, tmp_path / "o2.mp4", progress=False).audio == "none"
