"""The ffmpeg layer of ``srdeploy video``: probe, decode, encode, join and mux, as argument lists.

The executable is the static ffmpeg of the PyPI package ``imageio-ffmpeg`` (a base dependency,
so every install has libx264, libx265, SVT-AV1, FFV1 and AAC), or ``$SRDEPLOY_FFMPEG``. There is
no ffprobe in that package, so probing reads two things ffmpeg itself prints:

* ``ffmpeg -i SRC`` (no output): container, duration, start time, chapters and one line per
  stream (type, codec, language, attached picture, colour tags). Parsed by ``probe``.
* ``ffmpeg -copyts -i SRC -map 0:V:0 -fps_mode passthrough -enc_time_base demux -f framecrc -``:
  one line per *decoded* frame with its presentation time in the stream's own time base, and the
  decoded size after rotation. Parsed by ``frame_times``. This is a full decode (wrapped frames,
  no pixel copies), so the frame count is exactly what the segment decoders will produce.

Frames travel as raw BGR24 bytes through pipes (``rawvideo``), never through files. Every
process runs with an argument list (no shell); its stderr goes to a log file and a short tail is
kept in memory, so an error names the cause even when the log itself could not be written (a
full disk). Colour: decoding converts with the matrix the stream is tagged with (BT.601 when
untagged) and rotation is applied (frames come out upright); encoding converts back with the
source's tags, which are copied onto the output, so an RGB round trip is exact up to rounding.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

# --------------------------------------------------------------------------- executable


def ffmpeg_exe() -> str:
    """The ffmpeg executable: ``$SRDEPLOY_FFMPEG`` if set, else the one bundled by imageio-ffmpeg."""
    env = os.environ.get("SRDEPLOY_FFMPEG")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"$SRDEPLOY_FFMPEG={env}: no such executable; unset it to use the bundled ffmpeg")
        return env
    try:
        import imageio_ffmpeg
    except ModuleNotFoundError as exc:
        raise RuntimeError("srdeploy video needs the package imageio-ffmpeg (a dependency of srdeploy): "
                           "pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


class FFmpegError(RuntimeError):
    """An ffmpeg process failed; the message is one line naming the cause and the log file.

    Attributes:
        cause: the short cause ("No space left on device", ffmpeg's last line...).
        log: the log file holding ffmpeg's full stderr (None when there is none).
    """

    def __init__(self, message: str, cause: str = "", log: Path | None = None) -> None:
        super().__init__(message)
        self.cause = cause or message
        self.log = log


# Causes worth naming on their own (searched in ffmpeg's stderr, first match wins).
_CAUSES = ("No space left on device", "Disk quota exceeded", "Permission denied", "Read-only file system",
           "Input/output error", "Broken pipe", "File too large")


def failure_cause(text: str) -> str:
    """The most telling line of an ffmpeg stderr tail: a known OS error, else its last line."""
    for cause in _CAUSES:
        if cause in text:
            return cause
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


class Process:
    """An ffmpeg subprocess whose stderr is copied to ``log`` while a tail stays in memory.

    Args:
        args: arguments after the executable.
        log: log file (appended; write errors are ignored, so a full disk still reports).
        stdin, stdout: subprocess.PIPE or None.
    """

    def __init__(self, args: Sequence[str], log: Path, *, stdin=None, stdout=None) -> None:
        self.log = Path(log)
        self.tail: deque[str] = deque(maxlen=30)
        cmd = [ffmpeg_exe(), "-hide_banner", *([] if stdin is not None else ["-nostdin"]), *args]
        try:
            self._log = open(self.log, "a", encoding="utf-8", errors="replace")
            self._log.write("$ " + " ".join(cmd) + "\n")
        except OSError:
            self._log = None
        self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._pump, name="srdeploy-ffmpeg-log", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.tail.append(line)
            if self._log is not None:
                try:
                    self._log.write(line)
                except OSError:  # the disk may be the thing that failed; keep the tail anyway
                    self._log = None

    def wait(self) -> int:
        rc = self.proc.wait()
        self._reader.join()
        if self._log is not None:
            try:
                self._log.close()
            except OSError:
                pass
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.wait()

    def error(self, what: str) -> FFmpegError:
        cause = failure_cause("".join(self.tail))
        return FFmpegError(f"{what}: {cause} (ffmpeg log: {self.log})", cause, self.log)


def run(args: Sequence[str], log: Path, what: str) -> None:
    """Run ffmpeg to completion; raise FFmpegError("WHAT: cause (ffmpeg log: LOG)") on failure."""
    p = Process(args, log)
    if p.wait() != 0:
        raise p.error(what)


# --------------------------------------------------------------------------- probing
@dataclass(frozen=True)
class StreamInfo:
    """One stream as ``ffmpeg -i`` lists it.

    Attributes:
        index: stream index in the file.
        kind: "video", "audio", "subtitle", "data" or "attachment".
        codec: codec name ("h264", "aac", "subrip", "none" for a font attachment...).
        language: language tag or "".
        attached_pic: a cover image, not a video track.
        text: the stream line as ffmpeg printed it (for messages).
    """

    index: int
    kind: str
    codec: str
    language: str = ""
    attached_pic: bool = False
    text: str = ""


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg reports about a source file.

    Attributes:
        path: the file.
        format: demuxer name ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "image2"...).
        start: container start time in seconds (0.0 when not printed).
        duration: container duration in seconds, or None.
        streams: all streams, in file order.
        chapters: number of chapters.
        video: index of the video stream to upscale (first video stream that is not a cover), or None.
        pix_fmt: its pixel format; color_range/colorspace/color_primaries/color_trc: its colour tags ("" unknown).
        rotation: display rotation in degrees (applied while decoding).
    """

    path: Path
    format: str
    start: float
    duration: float | None
    streams: tuple[StreamInfo, ...]
    chapters: int = 0
    video: int | None = None
    pix_fmt: str = ""
    color_range: str = ""
    colorspace: str = ""
    color_primaries: str = ""
    color_trc: str = ""
    rotation: float = 0.0

    @property
    def audio(self) -> list[StreamInfo]:
        return [s for s in self.streams if s.kind == "audio"]

    @property
    def is_still_image(self) -> bool:
        """A still picture (PNG, JPEG...), which ffmpeg opens as a one-frame 'video'."""
        return self.format == "image2" or self.format.endswith("_pipe")


_INPUT = re.compile(r"^Input #0, (.+?), from '", re.MULTILINE)
_DURATION = re.compile(r"^\s*Duration: (N/A|(\d+):(\d+):(\d+(?:\.\d+)?))(?:, start: (-?\d+(?:\.\d+)?))?",
                       re.MULTILINE)
_STREAM = re.compile(r"^\s*Stream #0:(\d+)(?:\[[^\]]*\])?(?:\(([^)]*)\))?: (Video|Audio|Subtitle|Data|Attachment): "
                     r"([^\s,]+)(.*)$", re.MULTILINE)
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
# Colour tag names that ffmpeg prints and that its -colorspace/-color_primaries/-color_trc accept.
_SPACES = {"bt709", "bt470bg", "smpte170m", "smpte240m", "bt2020nc", "bt2020c", "fcc", "ycgco"}
_PRIMARIES = {"bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m", "film", "bt2020", "smpte428",
              "smpte431", "smpte432"}
_TRCS = {"bt709", "gamma22", "gamma28", "smpte170m", "smpte240m", "linear", "iec61966-2-1", "iec61966-2-4",
         "bt2020-10", "bt2020-12", "smpte2084", "arib-std-b67", "bt1361e", "smpte428"}


def probe(path: str | os.PathLike, log: Path | None = None) -> MediaInfo:
    """Read a file's streams, chapters and timing from ``ffmpeg -i``.

    Raises:
        FileNotFoundError: no such file.  IsADirectoryError: ``path`` is a folder.
        ValueError: empty file, or not something ffmpeg can open.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not a video file (to upscale a folder of images use "
                                "srdeploy upscale)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: cannot open video: the file is empty (0 bytes)")
    # "file:" so a name with a colon or a leading dash is never read as a protocol or an option.
    r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", f"file:{path}"], capture_output=True,
                       text=True, errors="replace")
    text = r.stderr
    if log is not None:
        try:
            with open(log, "a", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            pass
    m = _INPUT.search(text)
    if m is None:
        raise ValueError(f"{path}: cannot open video: it is not a video ffmpeg can decode ({failure_cause(text)})")
    head, _, _ = text.partition("At least one output")
    streams: list[StreamInfo] = []
    video = None
    extra: dict = {}
    for sm in _STREAM.finditer(head):
        idx, lang, kind, codec, rest = int(sm.group(1)), sm.group(2) or "", sm.group(3).lower(), sm.group(4), sm.group(5)
        s = StreamInfo(idx, kind, codec, lang, "(attached pic)" in rest, sm.group(0).strip())
        streams.append(s)
        if kind == "video" and not s.attached_pic and video is None:
            video = idx
            extra = _video_details(rest, head[sm.end():])
    d = _DURATION.search(head)
    duration = None
    start = 0.0
    if d is not None:
        if d.group(1) != "N/A":
            duration = int(d.group(2)) * 3600 + int(d.group(3)) * 60 + float(d.group(4))
        if d.group(5):
            start = float(d.group(5))
    return MediaInfo(path=path, format=m.group(1), start=start, duration=duration, streams=tuple(streams),
                     chapters=len(re.findall(r"^\s*Chapter #0:\d+", head, re.MULTILINE)), video=video, **extra)


def _video_details(rest: str, after: str) -> dict:
    """Pixel format, colour tags and rotation from a video stream line and the lines after it."""
    out: dict = {}
    m = re.match(r"[^,]*?,\s*([a-z0-9_]+)(?:\(([^)]*)\))?", rest)
    if m:
        out["pix_fmt"] = m.group(1)
        for tok in (t.strip() for t in (m.group(2) or "").split(",")):
            if tok in ("tv", "pc"):
                out["color_range"] = tok
            elif "/" in tok or tok in _SPACES:
                parts = tok.split("/") if "/" in tok else [tok] * 3
                if len(parts) == 3:
                    space, prim, trc = parts
                    out["colorspace"] = space if space in _SPACES else ""
                    out["color_primaries"] = prim if prim in _PRIMARIES else ""
                    out["color_trc"] = trc if trc in _TRCS else ""
    block = after.split("Stream #0:")[0]
    r = _ROTATION.search(block)
    if r:
        out["rotation"] = float(r.group(1))
    return out


@dataclass(frozen=True)
class FrameTimes:
    """Presentation times of every decoded frame of the video stream.

    Attributes:
        tb: the stream's time base (seconds per tick).
        pts: presentation time of each frame in ticks (absolute, as stored; sorted).
        last_duration: duration of the last frame in ticks.
        width, height: decoded frame size (after rotation).
        sar: sample aspect ratio (1 for square pixels).
    """

    tb: Fraction
    pts: tuple[int, ...]
    last_duration: int
    width: int
    height: int
    sar: Fraction = Fraction(1)

    @property
    def count(self) -> int:
        return len(self.pts)

    @property
    def duration_ticks(self) -> int:
        return self.pts[-1] - self.pts[0] + self.last_duration


def frame_times(info: MediaInfo, log: Path) -> FrameTimes:
    """Decode the video stream once (no pixel copies) and list every frame's time and the frame size.

    Raises:
        ValueError: no decodable frame.
    """
    if info.video is None:
        raise ValueError(f"{info.path}: has no video stream")
    args = ["-v", "error", "-copyts", "-i", f"file:{info.path}", "-map", f"0:{info.video}", "-fps_mode", "passthrough",
            "-enc_time_base", "demux", "-c:v", "wrapped_avframe", "-f", "framecrc", "-"]
    p = Process(args, log, stdout=subprocess.PIPE)
    out = p.proc.stdout.read().decode("ascii", "replace")
    rc = p.wait()
    tb = Fraction(1)
    size = (0, 0)
    sar = Fraction(1)
    pts: list[int] = []
    durs: list[int] = []
    for line in out.splitlines():
        if line.startswith("#tb 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            tb = Fraction(int(num), int(den))
        elif line.startswith("#dimensions 0:"):
            w, h = line.split(":", 1)[1].strip().split("x")
            size = (int(w), int(h))
        elif line.startswith("#sar 0:"):
            num, den = line.split(":", 1)[1].strip().split("/")
            sar = Fraction(int(num), int(den)) if int(num) > 0 and int(den) > 0 else Fraction(1)
        elif line and not line.startswith("#"):
            f = line.split(",")
            pts.append(int(f[2]))
            durs.append(int(f[3]))
    if not pts:
        cause = f" ({failure_cause(''.join(p.tail))})" if rc != 0 else ""
        raise ValueError(f"{info.path}: contains no decodable video frames (empty or corrupt video){cause}")
    order = sorted(range(len(pts)), key=pts.__getitem__)
    pts_sorted = tuple(pts[i] for i in order)
    if len(set(pts_sorted)) != len(pts_sorted):
        raise ValueError(f"{info.path}: frames with equal timestamps; the video stream is damaged")
    last = durs[order[-1]] or (pts_sorted[-1] - pts_sorted[-2] if len(pts_sorted) > 1 else 1)
    return FrameTimes(tb=tb, pts=pts_sorted, last_duration=last, width=size[0], height=size[1], sar=sar)


# --------------------------------------------------------------------------- timing
_COMMON_RATES = [Fraction(n, 1001) for n in (24000, 30000, 48000, 60000, 120000)] + \
                [Fraction(n) for n in (10, 12, 15, 24, 25, 30, 48, 50, 60, 90, 100, 120, 144, 240)]


@dataclass(frozen=True)
class Timing:
    """How output frames are timed.

    Attributes:
        rate: constant frame rate of the output (CFR sources: the source's exact rate; VFR: the mean).
        cfr: the source is constant-frame-rate (every frame within one tick of the grid at ``rate``).
        offset: seconds from the container start to the first video frame (kept in the output).
        duration: source video duration in seconds (first frame to end of last).
    """

    rate: Fraction
    cfr: bool
    offset: float
    duration: float


def analyse_timing(times: FrameTimes, start: float) -> Timing:
    """Decide CFR (exact rational rate, e.g. 24000/1001) or VFR from the frames' timestamps.

    A container's time base may not hold the rate exactly (Matroska stores milliseconds, so
    23.976 fps is 41/42/42 ms): the rate is the mean rate snapped to a common broadcast rate, or
    failing that the simplest fraction, and the source counts as CFR when every frame lies within
    one tick (plus rounding) of that grid.

    VFR sources are written at their mean rate ``N / duration``: same frame count, same duration
    (the last frame ends where the source's does), first frame at the source's start. A frame
    may then be displayed up to ``max_offset`` from its source time; ``vfr_drift`` reports it.
    """
    n = times.count
    duration = float(times.duration_ticks * times.tb)
    offset = float(times.pts[0] * times.tb) - start
    if n == 1:
        rate = Fraction(1) / times.tb / times.last_duration if times.last_duration else Fraction(25)
        return Timing(rate=_nice(rate), cfr=True, offset=offset, duration=duration)
    span = (times.pts[-1] - times.pts[0]) * times.tb
    mean = Fraction(n - 1) / span
    rate = _nice(mean)
    tol = Fraction(1001, 1000)  # one tick of the container's time base (plus rounding)
    t0 = times.pts[0]
    cfr = all(abs(Fraction(p - t0) - Fraction(i) / rate / times.tb) <= tol for i, p in enumerate(times.pts))
    if cfr:
        return Timing(rate=rate, cfr=True, offset=offset, duration=duration)
    mean_all = Fraction(n) / (times.duration_ticks * times.tb)
    return Timing(rate=mean_all.limit_denominator(1_000_000), cfr=False, offset=offset, duration=duration)


def _nice(rate: Fraction) -> Fraction:
    for r in _COMMON_RATES:
        if abs(rate - r) / r < Fraction(1, 2000):
            return r
    return rate.limit_denominator(1001)


def vfr_drift(times: FrameTimes, rate: Fraction) -> float:
    """Largest |output time - source time| in seconds when frames are written at ``rate``."""
    t0 = times.pts[0]
    return float(max(abs((p - t0) * times.tb - Fraction(i) / rate) for i, p in enumerate(times.pts)))


# --------------------------------------------------------------------------- encoder settings
# --codec aliases -> ffmpeg encoder; anything else is taken as an ffmpeg encoder name.
CODECS = {"h264": "libx264", "avc": "libx264", "hevc": "libx265", "h265": "libx265", "av1": "libsvtav1",
          "ffv1": "ffv1"}
# Per encoder: default CRF, default preset, default pixel format, whether --crf/--preset apply.
ENCODER_DEFAULTS = {
    "libx264": dict(crf=18, preset="medium", pix_fmt="yuv420p"),
    "libx264rgb": dict(crf=18, preset="medium", pix_fmt="bgr24"),
    "libx265": dict(crf=20, preset="medium", pix_fmt="yuv420p"),
    "libsvtav1": dict(crf=30, preset="8", pix_fmt="yuv420p"),
    "libaom-av1": dict(crf=30, preset=None, pix_fmt="yuv420p"),
    "ffv1": dict(crf=None, preset=None, pix_fmt="bgr0"),
}
_CRF_OPTION = {"libx264": "-crf", "libx264rgb": "-crf", "libx265": "-crf", "libsvtav1": "-crf",
               "libaom-av1": "-crf", "h264_nvenc": "-cq", "hevc_nvenc": "-cq", "av1_nvenc": "-cq"}
_HAS_PRESET = {"libx264", "libx264rgb", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc"}
# Output container by extension, and the codec used when --codec is not given.
CONTAINERS = {".mp4": ("mp4", "h264"), ".m4v": ("mp4", "h264"), ".mov": ("mov", "h264"),
              ".mkv": ("matroska", "h264"), ".webm": ("webm", "av1")}
_RGB_FORMATS = ("rgb", "bgr", "gbr")


@dataclass(frozen=True)
class EncoderSettings:
    """How segments are encoded (a small picklable value shared by every segment of a job).

    Attributes:
        encoder: ffmpeg encoder name (libx264, libx265, libsvtav1, ffv1, ...).
        crf: quality (None: the encoder's own or lossless FFV1).
        preset: speed preset (None: the encoder's default).
        pix_fmt: output pixel format (yuv420p, yuv420p10le, yuv444p, bgr0...).
        color: ("-colorspace", "bt709", ...) tags copied from the source (YUV outputs only).
        extra: further encoder arguments.
    """

    encoder: str
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str = "yuv420p"
    color: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def segment_format(self) -> str:
        # MOV/MP4 keep exact timestamps (Matroska rounds to milliseconds); MOV refuses AV1.
        return "mp4" if self.encoder in ("libsvtav1", "libaom-av1", "librav1e") or "av1" in self.encoder else "mov"

    def args(self) -> list[str]:
        a = ["-c:v", self.encoder, "-pix_fmt", self.pix_fmt]
        if self.crf is not None:
            a += [_CRF_OPTION[self.encoder], str(self.crf)]
        if self.preset is not None:
            a += ["-preset", self.preset]
        return a + list(self.color) + list(self.extra)

    def describe(self) -> str:
        parts = [self.encoder, self.pix_fmt]
        if self.crf is not None:
            parts.append(f"crf {self.crf}")
        elif self.encoder == "ffv1" or (self.encoder.startswith("libx264") and self.crf == 0):
            parts.append("lossless")
        if self.preset is not None:
            parts.append(f"preset {self.preset}")
        return " ".join(parts)


def container_for(dst: str | os.PathLike) -> str:
    """ffmpeg muxer for an output file name."""
    ext = Path(dst).suffix.lower()
    if ext not in CONTAINERS:
        raise ValueError(f"{dst}: unknown video extension {ext!r} for the ffmpeg encoder; use one of "
                         f"{', '.join(CONTAINERS)} (or --encoder opencv for .avi)")
    return CONTAINERS[ext][0]


def encoder_settings(dst: str | os.PathLike, *, codec: str | None = None, crf: int | None = None,
                     preset: str | None = None, pix_fmt: str | None = None, source: MediaInfo | None = None,
                     available: set[str] | None = None) -> EncoderSettings:
    """Resolve ``--codec/--crf/--preset/--pix-fmt`` for an output file (defaults documented in CONTAINERS).

    Args:
        dst: output file (its extension picks the default codec).
        codec: alias (h264, hevc, av1, ffv1) or an ffmpeg encoder name (libx264rgb, h264_nvenc...).
        crf, preset, pix_fmt: overrides; an option the encoder does not take is an error, never ignored.
        source: the probed source (its colour tags are copied onto YUV outputs).
        available: encoder names ffmpeg has (default: asked from ffmpeg).
    """
    ext_codec = CONTAINERS[Path(dst).suffix.lower()][1] if Path(dst).suffix.lower() in CONTAINERS else None
    name = codec or ext_codec
    if name is None:
        container_for(dst)  # raises with the list of extensions
    encoder = CODECS.get(name.lower(), name)
    if available is None:
        available = encoders()
    if encoder not in available:
        raise ValueError(f"--codec {name}: ffmpeg has no encoder {encoder!r}; use h264, hevc, av1, ffv1 or an "
                         f"encoder from `{ffmpeg_exe()} -encoders`")
    d = ENCODER_DEFAULTS.get(encoder, dict(crf=None, preset=None, pix_fmt="yuv420p"))
    if crf is not None and encoder not in _CRF_OPTION:
        raise ValueError(f"--crf does not apply to encoder {encoder}" +
                         (" (FFV1 is lossless)" if encoder == "ffv1" else "; drop --crf"))
    if crf is not None and not 0 <= crf <= 63:
        raise ValueError(f"--crf {crf}: out of range (0-51 for H.264/HEVC, 0-63 for AV1)")
    if preset is not None and encoder not in _HAS_PRESET:
        raise ValueError(f"--preset does not apply to encoder {encoder}; drop --preset")
    pix = pix_fmt or d["pix_fmt"]
    color: tuple[str, ...] = ()
    if source is not None and not pix.startswith(_RGB_FORMATS):
        for opt, value in (("-color_range", source.color_range), ("-colorspace", source.colorspace),
                           ("-color_primaries", source.color_primaries), ("-color_trc", source.color_trc)):
            if value:
                color += (opt, value)
    extra: tuple[str, ...] = ()
    if encoder == "libx265":
        extra = ("-x265-params", "log-level=error")
    return EncoderSettings(encoder=encoder, crf=d["crf"] if crf is None else crf,
                           preset=d["preset"] if preset is None else preset, pix_fmt=pix, color=color, extra=extra)


_ENCODERS: set[str] | None = None


def encoders() -> set[str]:
    """Names of the video encoders this ffmpeg has (cached)."""
    global _ENCODERS
    if _ENCODERS is None:
        r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-encoders"], capture_output=True, text=True,
                           errors="replace")
        _ENCODERS = {m.group(1) for m in re.finditer(r"^ V\S{5} (\S+)", r.stdout, re.MULTILINE)}
    return _ENCODERS


# --------------------------------------------------------------------------- decode / encode pipes
class FrameDecoder:
    """Decode ``count`` frames of the video stream, starting at ``seek`` seconds, as BGR24 arrays.

    ``seek`` is a time between the previous frame and the first wanted one (so rounding can never
    pick the wrong frame); ffmpeg seeks to the keyframe before it and decodes forward, dropping
    earlier frames (accurate seek). Rotation is applied, as in ``frame_times``.

    Args:
        info: the probed source.  width, height: decoded size (``FrameTimes``).
        seek: seconds from the container start (None: from the first frame).
        count: frames to read.  log: ffmpeg's stderr.
    """

    def __init__(self, info: MediaInfo, width: int, height: int, seek: float | None, count: int, log: Path) -> None:
        self.info, self.width, self.height, self.count = info, width, height, count
        args = ["-v", "error"]
        if seek is not None:
            args += ["-ss", f"{seek:.6f}"]
        args += ["-i", f"file:{info.path}", "-map", f"0:{info.video}", "-fps_mode", "passthrough",
                 "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
        self.process = Process(args, log, stdout=subprocess.PIPE)

    def __iter__(self) -> Iterator[np.ndarray]:
        size = self.width * self.height * 3
        out = self.process.proc.stdout
        for _ in range(self.count):
            buf = out.read(size)
            if len(buf) < size:
                break
            yield np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)

    def close(self) -> int:
        """Stop the decoder (it may still be running when fewer frames were wanted)."""
        self.process.kill()
        return self.process.proc.returncode


class FrameEncoder:
    """An ffmpeg process that encodes BGR24 frames written to its stdin into ``path``.

    Args:
        path: output file (written by ffmpeg directly: give it a temporary name).
        width, height: frame size.  rate: frame rate of the output (exact fraction).
        settings: EncoderSettings.  log: ffmpeg's stderr.
        fmt: muxer (default: ``settings.segment_format``).  sar: sample aspect ratio to tag.
    """

    def __init__(self, path: Path, width: int, height: int, rate: Fraction, settings: EncoderSettings, log: Path,
                 *, fmt: str | None = None, sar: Fraction = Fraction(1)) -> None:
        self.path = Path(path)
        self.frames = 0
        args = ["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}",
                "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0"]
        if sar != 1:
            args += ["-vf", f"setsar={sar.numerator}/{sar.denominator}"]
        args += settings.args() + ["-f", fmt or settings.segment_format, f"file:{path}"]
        self.process = Process(args, log, stdin=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        try:
            self.process.proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, ValueError, OSError):
            # ffmpeg exited (disk full, bad option, killed): its stderr says why
            self.process.kill()
            raise self.process.error(f"{self.path}: the encoder stopped after {self.frames} frames") from None
        self.frames += 1

    def close(self) -> None:
        """Finish the file; raise FFmpegError naming the cause if ffmpeg failed."""
        try:
            self.process.proc.stdin.close()
        except OSError:
            pass
        if self.process.wait() != 0:
            raise self.process.error(f"{self.path}: encoding failed")

    def abort(self) -> None:
        self.process.kill()


def count_packets(path: Path, log: Path) -> int:
    """Number of video packets (= frames for our encoders) in a file, without decoding; -1 when unreadable."""
    p = Process(["-v", "error", "-i", f"file:{path}", "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"], log,
                stdout=subprocess.PIPE)
    out = p.proc.stdout.read().decode("ascii", "replace")
    if p.wait() != 0:
        return -1
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


# --------------------------------------------------------------------------- join and mux
@dataclass
class MuxPlan:
    """Which source streams go into the output and how (``join_and_mux`` fills ``notices``)."""

    copy: list[StreamInfo] = field(default_factory=list)
    encode: dict[int, str] = field(default_factory=dict)  # stream index -> encoder
    dropped: dict[int, str] = field(default_factory=dict)  # stream index -> reason
    notices: list[str] = field(default_factory=list)


_TEXT_SUBS = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}
_FALLBACK_AUDIO = {"mp4": "aac", "mov": "aac", "matroska": "flac", "webm": "libopus"}
_FALLBACK_SUBS = {"mp4": "mov_text", "mov": "mov_text", "matroska": "srt", "webm": "webvtt"}


def join_and_mux(segments: Sequence[Path], durations: Sequence[Fraction], source: MediaInfo, dst_tmp: Path,
                 container: str, offset: float, work: Path, *, hevc_tag: bool = False, audio: bool = True) -> MuxPlan:
    """Join encoded segments without re-encoding and add every other stream of the source.

    The segments are listed in an ffconcat file with exact durations (cumulative start times
    rounded once, so no drift accumulates); the video is placed ``offset`` seconds after the
    container start, as in the source, so audio and subtitles stay in sync. All other streams
    (audio tracks, subtitles, attachments such as Matroska fonts, data), chapters and global
    metadata are copied; the source video stream's metadata goes onto the new video stream.
    A stream the container cannot hold is re-encoded (audio -> AAC/FLAC/Opus, text subtitles ->
    mov_text/SRT/WebVTT) or dropped; each case becomes one line in ``notices``.

    Args:
        segments: encoded segment files, in order.  durations: their exact durations (seconds).
        source: the probed source.  dst_tmp: file to write (renamed by the caller).
        container: ffmpeg muxer of the output.  offset: seconds from container start to the first frame.
        work: folder for the concat list and the log.  hevc_tag: tag HEVC as hvc1 (MP4/MOV players).
        audio: False leaves the audio tracks out (``--no-audio``; no notice).

    Raises:
        FFmpegError: the mux failed (one line naming the cause and ``work/join.log``).
    """
    log = work / "join.log"
    listing = work / "segments.ffconcat"
    lines = ["ffconcat version 1.0"]
    acc = Fraction(0)
    prev_us = 0
    for seg, dur in zip(segments, durations):
        acc += dur
        end_us = round(acc * 1_000_000)
        lines += [f"file '{Path(seg).resolve().as_posix()}'", f"duration {(end_us - prev_us) / 1e6:.6f}"]
        prev_us = end_us
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")

    plan = MuxPlan()
    for s in source.streams:
        if s.index == source.video or (s.kind == "audio" and not audio):
            continue
        if s.kind == "attachment" and container != "matroska":
            plan.dropped[s.index] = f"attachments need .mkv; {container} cannot hold them"
        elif s.kind == "video" and not s.attached_pic:
            plan.copy.append(s)  # another video track: carried as it is, not upscaled
            plan.notices.append(f"stream #{s.index} ({s.codec} video) copied as it is; only stream "
                                f"#{source.video} is upscaled")
        else:
            plan.copy.append(s)
    for _ in range(len(source.streams) + 1):
        args = _mux_args(listing, source, plan, container, offset, dst_tmp, hevc_tag)
        p = Process(args, log)
        if p.wait() == 0:
            break
        tail = "".join(p.tail)
        m = re.search(r"(?:Could not find tag for codec \S+ in stream|stream) #(\d+)", tail)
        out_index = int(m.group(1)) if m else -1
        mapped = [s for s in plan.copy]
        if not (1 <= out_index <= len(mapped)):
            raise p.error(f"{dst_tmp}: joining the segments failed")
        s = mapped[out_index - 1]
        if s.index in plan.encode or s.kind not in ("audio", "subtitle"):
            plan.copy.remove(s)
            plan.encode.pop(s.index, None)
            plan.dropped[s.index] = f"{container} cannot hold {s.kind} codec {s.codec}"
        else:
            enc = _FALLBACK_AUDIO.get(container, "aac") if s.kind == "audio" else (
                _FALLBACK_SUBS.get(container) if s.codec in _TEXT_SUBS else None)
            if enc is None:
                plan.copy.remove(s)
                plan.dropped[s.index] = f"{container} cannot hold {s.kind} codec {s.codec} (image subtitles " \
                                        "cannot be converted to text)"
            else:
                plan.encode[s.index] = enc
        dst_tmp.unlink(missing_ok=True)
    else:
        raise FFmpegError(f"{dst_tmp}: joining the segments failed (ffmpeg log: {log})")
    for s in source.streams:
        if s.index in plan.encode:
            plan.notices.append(f"stream #{s.index} ({s.kind} {s.codec}) re-encoded to {plan.encode[s.index]}: "
                                f"{container} cannot hold {s.codec}")
        elif s.index in plan.dropped:
            plan.notices.append(f"stream #{s.index} ({s.kind} {s.codec}) dropped: {plan.dropped[s.index]}")
    return plan


def _mux_args(listing: Path, source: MediaInfo, plan: MuxPlan, container: str, offset: float, dst: Path,
              hevc_tag: bool) -> list[str]:
    args = ["-v", "error", "-y"]
    if abs(offset) > 1e-9:
        args += ["-itsoffset", f"{offset:.6f}"]
    args += ["-f", "concat", "-safe", "0", "-i", f"file:{listing}", "-i", f"file:{source.path}",
             "-map", "0:v:0"]
    for s in plan.copy:
        args += ["-map", f"1:{s.index}"]
    args += ["-c", "copy"]
    for out_index, s in enumerate(plan.copy, start=1):
        if s.index in plan.encode:
            args += [f"-c:{out_index}", plan.encode[s.index]]
    # An explicit per-stream -map_metadata turns ffmpeg's default per-stream copy off: map them all.
    args += ["-map_metadata", "1", "-map_chapters", "1", "-map_metadata:s:0", f"1:s:{source.video}"]
    for out_index, s in enumerate(plan.copy, start=1):
        args += [f"-map_metadata:s:{out_index}", f"1:s:{s.index}"]
    if hevc_tag and container in ("mp4", "mov"):
        args += ["-tag:v:0", "hvc1"]
    if container in ("mp4", "mov"):
        args += ["-movflags", "+faststart"]
    return args + ["-f", container, f"file:{dst}"]


def with_path(info: MediaInfo, path: Path) -> MediaInfo:
    """The same MediaInfo for a file at another path (a copied source)."""
    return replace(info, path=path)


def encode_fps(width: int, height: int, settings: EncoderSettings, *, frames: int = 60,
               rate: Fraction = Fraction(25), work: Path) -> float:
    """ffmpeg's encode speed alone (frames/s) at ``width`` x ``height`` with ``settings``.

    Feeds a moving synthetic pattern through the same pipe, encoder and muxer as a segment
    (into ``work``, deleted after), timed from the first write to the closed file. A user
    compares it with the model's fps: on a fast GPU the encoder, not the model, can be the limit.
    """
    import time

    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], -1).astype(np.uint8)
    pattern = [np.roll(base, 7 * t, axis=1) for t in range(8)]
    path = Path(work) / f"encode-fps.{settings.segment_format}"
    enc = FrameEncoder(path, width, height, rate, settings, Path(work) / "encode-fps.log")
    try:
        t0 = time.perf_counter()
        for t in range(frames):
            enc.write(pattern[t % len(pattern)])
        enc.close()
        return frames / (time.perf_counter() - t0)
    except BaseException:
        enc.abort()
        raise
    finally:
        path.unlink(missing_ok=True)
