"""Video super-resolution with OpenCV's decoder and ``VideoWriter`` (``srdeploy video --encoder opencv``).

``srdeploy video`` encodes with ffmpeg by default (``media.ffmpeg`` and ``media.segments``:
H.264/HEVC/AV1/FFV1..., every stream kept, resumable segments); ``--encoder opencv`` runs
``upscale_video`` below: OpenCV decodes, ``media.pipeline.run_pipeline`` upscales (decode,
inference and encode overlapped), OpenCV's ``VideoWriter`` encodes. Ctrl-C or SIGTERM stops it
promptly; the partial file is deleted and nothing is left under the output name.

Output is written to a temporary name in the destination folder (same extension, so OpenCV
picks the same container) and renamed at the end (``atomic_target``).

Colour. OpenCV decodes every source to 8-bit BGR: it hands the stream's YUV to libswscale with
swscale's default coefficients, i.e. the BT.601 matrix whatever the stream is tagged with
(opencv/opencv#20513), limited "TV" range for yuv* pixel formats and full range for the yuvj*
(JPEG) ones, and it drops anything above 8 bits. The model's contract
is RGB in [0, 1] (metadata ``channel_order``): the BGR frame's channels are reordered to RGB as
each tile/batch is converted to float for the model, and the model's RGB output is written back
in BGR order (``Upscaler.upscale(..., order="BGR")``), which saves two full-frame copies. On encoding, OpenCV converts BGR back to the codec's pixel format (YUV 4:2:0 for
mp4v/MJPG with the same BT.601 limited-range assumption; FFV1, PNG and HFYU stay RGB) and writes
no colour metadata (primaries, transfer, matrix, range) and no HDR side data. So an SDR BT.601
source comes back consistent; a BT.709 (HD) or full-range source can shift slightly in hue/level
because the matrix used to decode and the one a player assumes for the output may differ, and
HDR/10-bit sources are tone-clipped to 8 bits. We accept this because OpenCV exposes neither the
matrix nor the range of its conversions; where exact colour handling matters, use the ffmpeg
encoder (the default), which keeps the colour tags. Rotation metadata is applied
by OpenCV while decoding (frames come out upright), so the output carries no rotation tag.

Audio and other streams: OpenCV writes video only, so the source's audio streams are muxed in
afterwards through the ffmpeg front-end (``media.ffmpeg.add_audio``: copied, or re-encoded to
the container's usual codec when the codec does not fit); subtitles, data streams and metadata
are not carried (the ffmpeg encoder carries them).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..atomic import atomic_target, occupied
from ..progress import progress_bar
from .pipeline import run_pipeline, upscale_frames  # noqa: F401  (upscale_frames: bench imports it from here)

# Default FourCC by container. The PyPI OpenCV builds ship FFmpeg without x264/x265 (licensing),
# so H.264 ("avc1") is usually unavailable: MPEG-4 Part 2 is the widely playable choice for
# .mp4/.mov, FFV1 (lossless) for .mkv, MJPEG for .avi.
DEFAULT_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "FFV1", ".avi": "MJPG"}
_MAX_FRAME_COUNT = 10 ** 9  # OpenCV reports garbage (huge or negative) counts for unindexed streams


@dataclass(frozen=True)
class VideoInfo:
    """What OpenCV reports about a video.

    Attributes:
        path: the file.
        width, height: frame size in pixels.
        fps: frames per second (CAP_PROP_FPS; 0 when unknown).
        frame_count: number of frames, or None when the container does not say (raw streams).
        fourcc: the stream's codec tag as text ("" when unknown).
    """

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int | None
    fourcc: str


@dataclass
class VideoStats:
    """What ``upscale_video`` did.

    Attributes:
        frames: frames written.
        width, height: output frame size.
        source_width, source_height: input frame size.
        fps: end-to-end frames per second (first decode to last encode; remux excluded).
        seconds: wall time of the pipeline (same span as ``fps``).
        source_fps: frame rate of the source and the output.
        codec: FourCC used for the output.
        audio: "copied", "re-encoded", "none" (the source has none), "dropped" (no ffmpeg or it
            failed; see warnings) or "disabled".
        warnings: everything the user should know (also printed).
    """

    frames: int
    width: int
    height: int
    source_width: int
    source_height: int
    fps: float
    seconds: float
    source_fps: float
    codec: str
    audio: str
    warnings: list[str] = field(default_factory=list)


def _cv2():
    import cv2

    return cv2


def _open_capture(path: Path):
    cv2 = _cv2()
    # The FFmpeg backend explicitly: CAP_ANY would read a name containing '%' as an image sequence.
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        size = path.stat().st_size
        what = "the file is empty (0 bytes)" if size == 0 else "it is not a video OpenCV/FFmpeg can decode (corrupt, truncated or an unsupported format)"
        raise ValueError(f"{path}: cannot open video: {what}")
    return cap


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open ``path`` with OpenCV (FFmpeg backend) and read its properties.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, corrupt or not a video.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file does not exist")
    cap = _open_capture(path)
    try:
        return _info(cap, path)
    finally:
        cap.release()


def _info(cap, path: Path) -> VideoInfo:
    cv2 = _cv2()
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    fps = cap.get(cv2.CAP_PROP_FPS)
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)) if code > 0 else ""
    return VideoInfo(path=path, width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                     height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     fps=float(fps) if math.isfinite(fps) and fps > 0 else 0.0,
                     frame_count=int(count) if math.isfinite(count) and 0 < count < _MAX_FRAME_COUNT else None,
                     fourcc=fourcc.strip("\x00"))


def default_codec(path: str | os.PathLike) -> str:
    """The FourCC used for an output extension when ``--codec`` is not given."""
    ext = Path(path).suffix.lower()
    if ext not in DEFAULT_CODECS:
        raise ValueError(f"{path}: unknown video extension {ext!r}; use one of {', '.join(DEFAULT_CODECS)} "
                         "or pass --codec FOURCC")
    return DEFAULT_CODECS[ext]


def _fourcc(codec: str) -> int:
    if len(codec) != 4:
        raise ValueError(f"--codec {codec!r}: a FourCC has exactly 4 characters (e.g. mp4v, MJPG, FFV1, 'png ')")
    return _cv2().VideoWriter_fourcc(*codec)


def _open_writer(path: Path, codec: str, fps: float, size: tuple[int, int], final: Path):
    cv2 = _cv2()
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, _fourcc(codec), fps, size)
    if not writer.isOpened():
        writer.release()
        raise RuntimeError(f"{final}: OpenCV cannot encode FourCC {codec!r} into a {final.suffix} file with "
                           f"this build (H.264 'avc1' is missing from the PyPI wheels); try --codec "
                           f"{DEFAULT_CODECS.get(final.suffix.lower(), 'mp4v')} or another container "
                           f"({', '.join(f'{k} {v}' for k, v in DEFAULT_CODECS.items())})")
    return writer


def upscale_video(upscaler, src: str | os.PathLike, dst: str | os.PathLike, *, codec: str | None = None,
                  batch: int = 1, overwrite: bool = False, progress: bool = True, audio: bool = True,
                  queue_frames: int | None = None,
                  log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> VideoStats:
    """Upscale every frame of ``src`` into ``dst`` at the source frame rate.

    Args:
        upscaler: a ``srdeploy.runtime.upscale.Upscaler`` (holds the session, tile and tile batch).
        src: input video (anything OpenCV's FFmpeg backend decodes).
        dst: output video; the container follows the extension.
        codec: output FourCC (default by extension, see ``DEFAULT_CODECS``).
        batch: frames per inference call (frames that fit in one tile are stacked).
        overwrite: replace an existing ``dst``.
        progress: show a progress bar (frames, fps, ETA) on stderr.
        audio: copy the source's audio with ffmpeg where it exists (False: do not try; the
            executable is ``media.ffmpeg.ffmpeg_exe``'s, chosen with ``use_ffmpeg``).
        queue_frames: frames buffered between stages (default 2 * batch + 2).
        log: where warnings go (stderr by default).

    Returns:
        VideoStats (frames, end-to-end fps, audio outcome, warnings).

    Raises:
        FileNotFoundError: ``src`` missing.  FileExistsError: ``dst`` exists without ``overwrite``.
        ValueError: empty/corrupt/undecodable source, bad codec.  RuntimeError: encoder unavailable.
        KeyboardInterrupt: re-raised after cleaning up (no file left under ``dst``).
    """
    src, dst = Path(src), Path(dst)
    codec = check_request(src, dst, codec, batch=batch, overwrite=overwrite)
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"warning: {msg}")

    cap, info, first = _open_source(src)
    try:
        h, w = first.shape[:2]
        s = upscaler.session.info.scale
        out_w, out_h = w * s, h * s
        if out_w % 2 or out_h % 2:
            raise ValueError(f"{src}: output size {out_w}x{out_h} is odd; OpenCV's FFmpeg encoder would cut a "
                             "row/column (it needs even sizes)")
        fps = info.fps
        if fps <= 0 or fps > 1000:
            warn(f"{src}: frame rate unknown ({info.fps}); writing at 25 fps")
            fps = 25.0
        # The partial output is hidden beside dst with dst's extension (OpenCV and ffmpeg choose the
        # container from it); an interrupted run (Ctrl-C, SIGTERM, error) removes it.
        with atomic_target(dst, keep_suffix=True, create=False, overwrite=overwrite) as tmp:
            writer = _open_writer(tmp, codec, fps, (out_w, out_h), dst)
            try:
                written, seconds = _run_pipeline(upscaler, cap, first, info, writer, src, batch=batch,
                                                 out_size=(out_w, out_h), progress=progress,
                                                 queue_frames=queue_frames)
            finally:
                writer.release()
            audio_state = _finish(src, dst, tmp, info, written, (out_w, out_h), codec, audio, warn)
    finally:
        cap.release()
    return VideoStats(frames=written, width=out_w, height=out_h, source_width=w, source_height=h,
                      fps=written / seconds if seconds > 0 else 0.0, seconds=seconds, source_fps=fps, codec=codec,
                      audio=audio_state, warnings=warnings)


def check_request(src: Path, dst: Path, codec: str | None, *, batch: int = 1, overwrite: bool = False) -> str:
    """Validate paths and output settings before any work (the CLI calls it before the model loads).

    The FourCC is tried on a small file of ``dst``'s type in a temporary folder, so a codec this
    OpenCV build cannot write into that container fails here, in one line, not after the model
    has loaded.

    Returns:
        The FourCC to use.
    """
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: video file does not exist")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the output would overwrite the input video; choose another output name")
    if not overwrite and occupied(dst):  # a dangling symlink too
        raise FileExistsError(f"{dst}: output exists; pass --overwrite to replace it")
    if dst.is_dir():
        raise IsADirectoryError(f"{dst}: output is a folder; give a video file name (e.g. out.mp4)")
    codec = codec or default_codec(dst)
    with tempfile.TemporaryDirectory(prefix="srdeploy-check-") as tmp:
        _open_writer(Path(tmp) / f"check{dst.suffix}", codec, 25.0, (64, 64), dst).release()
    dst.parent.mkdir(parents=True, exist_ok=True)
    return codec


def _open_source(src: Path):
    """(capture, VideoInfo, first frame as BGR); the capture is released on failure."""
    cv2 = _cv2()
    cap = _open_capture(src)
    try:
        info = _info(cap, src)
        try:
            ok, first = cap.read()
        except cv2.error as exc:
            raise ValueError(f"{src}: cannot decode the first frame ({exc})") from exc
        if not ok or first is None:
            raise ValueError(f"{src}: contains no decodable video frames (empty or corrupt video)")
        return cap, info, _to_bgr(first, src, 0)
    except BaseException:
        cap.release()
        raise


def _run_pipeline(upscaler, cap, first: np.ndarray, info: VideoInfo, writer, src: Path, *, batch: int,
                  out_size: tuple[int, int], progress: bool, queue_frames: int | None) -> tuple[int, float]:
    """OpenCV capture -> ``run_pipeline`` -> OpenCV writer; returns (frames written, seconds)."""
    cv2 = _cv2()
    h, w = first.shape[:2]
    out_w, out_h = out_size

    def frames():
        yield first
        index = 1
        while True:
            try:
                ok, frame = cap.read()
            except cv2.error as exc:
                raise ValueError(f"{src}: decoding failed at frame {index} ({exc}); the file is damaged") from exc
            if not ok or frame is None:
                return
            frame = _to_bgr(frame, src, index)
            if frame.shape[:2] != (h, w):
                raise ValueError(f"{src}: frame {index} is {frame.shape[1]}x{frame.shape[0]} but the video "
                                 f"started at {w}x{h}; resolution changes inside a video are not supported")
            yield frame
            index += 1

    def write(frame: np.ndarray) -> None:
        if frame.shape != (out_h, out_w, 3) or frame.dtype != np.uint8:
            raise RuntimeError(f"upscaler returned {frame.shape} {frame.dtype}, expected ({out_h}, {out_w}, 3) uint8")
        writer.write(frame)

    t0 = time.perf_counter()
    with progress_bar(total=info.frame_count, unit="frame", desc=src.name, enabled=progress) as bar:
        written = run_pipeline(upscaler, frames(), write, batch=batch, on_frame=bar.update, queue_groups=queue_frames)
    return written, time.perf_counter() - t0


def _finish(src: Path, dst: Path, tmp: Path, info: VideoInfo, written: int, out_size: tuple[int, int], codec: str,
            audio: bool, warn: Callable[[str], None]) -> str:
    """Check the encoded file and add the audio; returns the audio outcome (see VideoStats)."""
    out_w, out_h = out_size
    if info.frame_count is not None and written != info.frame_count:
        warn(f"{src}: decoded {written} frames but the container declares {info.frame_count}: the file "
             "may be truncated or have undecodable frames (output holds the decoded ones)")
    # OpenCV's writer reports no errors (a full disk included): read the result back.
    try:
        check = probe_video(tmp) if tmp.is_file() and tmp.stat().st_size > 0 else None
    except ValueError:
        check = None
    if check is None or (check.width, check.height) != (out_w, out_h):
        raise RuntimeError(f"{dst}: the encoder produced no readable video (disk full? codec {codec!r} "
                           f"unusable in {dst.suffix}?); nothing was written")
    if check.frame_count is not None and check.frame_count != written:
        warn(f"{dst}: {written} frames were written but the file reports {check.frame_count}")
    return _add_audio(src, dst, tmp, warn) if audio else "disabled"


def _add_audio(src: Path, dst: Path, tmp: Path, warn: Callable[[str], None]) -> str:
    """The source's audio into the encoded file ``tmp``; "none", "copied", "re-encoded" or "dropped"
    (a failure is a warning naming ffmpeg's cause and its log, kept beside ``dst``)."""
    from . import ffmpeg as ff

    log = dst.with_name(f".{dst.name}.audio.log")
    try:
        state = ff.add_audio(ff.probe(src, log), tmp, log)
    except (ff.FFmpegError, ValueError) as exc:
        cause = exc.cause if isinstance(exc, ff.FFmpegError) else str(exc)
        warn(f"{src}: ffmpeg could not add the audio to the {dst.suffix} output ({cause}; ffmpeg log: {log}); "
             "audio was dropped")
        return "dropped"
    log.unlink(missing_ok=True)
    if state == "re-encoded":
        warn(f"{src}: the audio codec does not fit a {dst.suffix} container; audio was re-encoded")
    return state


def _to_bgr(frame: np.ndarray, src: Path, index: int) -> np.ndarray:
    """OpenCV's decoded frame as 8-bit 3-channel BGR (it already is, unless CONVERT_RGB is off)."""
    cv2 = _cv2()
    if frame.dtype != np.uint8:
        raise ValueError(f"{src}: frame {index} decoded as {frame.dtype}; only 8-bit video is supported")
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame


# --------------------------------------------------------------------------- test/bench input
def write_test_video(path: str | os.PathLike, *, width: int, height: int, frames: int, fps: float = 25.0,
                     codec: str | None = None) -> Path:
    """Write a synthetic video (a moving, textured pattern) for tests and ``bench --video``.

    Even sizes go through OpenCV's FFmpeg writer (codec by extension unless given). Odd sizes
    need OpenCV's own MJPEG AVI writer (the FFmpeg writer cuts odd sizes to even): ``path`` must
    end in .avi, and the frame rate is stored as a whole number.

    Args:
        path: output file.
        width, height: frame size.
        frames: number of frames.
        fps: frame rate.
        codec: FourCC (default by extension).
    """
    cv2 = _cv2()
    path = Path(path)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if width % 2 or height % 2:
        if path.suffix.lower() != ".avi":
            raise ValueError(f"{path}: odd frame sizes can only be written as MJPEG .avi by OpenCV")
        writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), fps,
                                 (width, height))
    else:
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, _fourcc(codec or default_codec(path)), fps,
                                 (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write this test video")
    try:
        for t in range(frames):
            r = (xx * 7 + t * 11) % 256
            g = (yy * 5 + t * 3) % 256
            b = 128 + 100 * np.sin((xx + yy + 3 * t) / 4.0)
            img = np.stack([b, g, r], axis=-1)
            # a bright square crossing the frame
            s = max(2, min(width, height) // 4)
            x0 = (t * 3) % max(1, width - s)
            img[height // 3:height // 3 + s, x0:x0 + s] = 240
            writer.write(np.clip(img, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    return path
