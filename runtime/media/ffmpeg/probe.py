"""What a source holds, read from ffmpeg itself: streams and tags (``probe``), every frame's time (``frame_times``).

There is no ffprobe in the imageio-ffmpeg package, so probing reads two things ffmpeg prints:

* ``ffmpeg -i SRC`` (no output): container, duration, start time, chapters and one line per
  stream (type, codec, language, attached picture, colour tags). Parsed by ``probe``.
* ``ffmpeg -copyts -i SRC -map 0:V:0 -fps_mode passthrough -enc_time_base demux -f framecrc -``:
  one line per *decoded* frame with its presentation time in the stream's own time base, and the
  decoded size after rotation. Parsed by ``frame_times``. This is a full decode (wrapped frames,
  no pixel copies), so the frame count is exactly what the segment decoders will produce.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from .process import Process, capture, failure_cause

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
        width, height: coded frame size of that stream (0 when not printed; see ``frame_size``).
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
    width: int = 0
    height: int = 0

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the decoded frames: the coded size, turned by the rotation."""
        turned = round(self.rotation / 90) % 2 == 1
        return (self.height, self.width) if turned else (self.width, self.height)

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
    url = f"file:{path}"
    # ffmpeg prints the name as it is: a newline in it could fake a stream or duration line below.
    text = capture(["-i", url]).stderr.replace(url, "file:SOURCE")
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
    size = re.search(r",\s(\d+)x(\d+)\b", rest)  # ", 1920x1080 [SAR 1:1 ...": not the "0x31637661" tag
    if size:
        out["width"], out["height"] = int(size.group(1)), int(size.group(2))
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
        damage: the decoder's complaint when the stream is damaged or cut short ("" when it decoded
            cleanly); the frames that did decode are listed all the same.
    """

    tb: Fraction
    pts: tuple[int, ...]
    last_duration: int
    width: int
    height: int
    sar: Fraction = Fraction(1)
    damage: str = ""

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
    # "-v error": a clean decode prints nothing; a cut or damaged file prints why (partial file,
    # corrupt packet, invalid data), which is worth a warning even though some frames decoded.
    complaint = "".join(p.tail).strip()
    return FrameTimes(tb=tb, pts=pts_sorted, last_duration=last, width=size[0], height=size[1], sar=sar,
                      damage=" ".join(failure_cause(complaint).split()) if complaint or rc != 0 else "")



def decoded_frames(path: Path, log: Path) -> int:
    """Number of video frames that decode from a file (a full decode, no pixel copies); -1 on a
    decoding error. Unlike ``count_packets`` this notices packets a player could not show."""
    p = Process(["-v", "error", "-i", f"file:{path}", "-map", "0:v:0", "-c:v", "wrapped_avframe", "-f", "framecrc",
                 "-"], log, stdout=subprocess.PIPE)
    out = p.proc.stdout.read().decode("ascii", "replace")
    if p.wait() != 0:
        return -1
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))


def count_packets(path: Path, log: Path) -> int:
    """Number of video packets (= frames for our encoders) in a file, without decoding; -1 when unreadable."""
    p = Process(["-v", "error", "-i", f"file:{path}", "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"], log,
                stdout=subprocess.PIPE)
    out = p.proc.stdout.read().decode("ascii", "replace")
    if p.wait() != 0:
        return -1
    return sum(1 for line in out.splitlines() if line and not line.startswith("#"))



def with_path(info: MediaInfo, path: Path) -> MediaInfo:
    """The same MediaInfo for a file at another path (a copied source)."""
    return replace(info, path=path)
