"""Which encoder writes the video, with which options, into which container; checked before any work.

``CONTAINERS`` maps each output extension (every one in ``media.files.VIDEO_EXTS``) to its
ffmpeg muxer and the codec used when ``--codec`` is not given: one the container holds and
players expect there.

=================== =========== ============================================== ==================
extension           muxer       default codec                                  quality (--crf)
=================== =========== ============================================== ==================
.mp4 .m4v .mov .mkv mp4/mov/mkv H.264 (libx264, yuv420p, preset medium)        CRF 18
.avi .flv           avi/flv     H.264 (libx264)                                CRF 18
.ts .mts .m2ts      mpegts      H.264 (libx264)                                CRF 18
.webm               webm        AV1 (SVT-AV1, preset 8)                        CRF 30
.mpg .mpeg          mpeg        MPEG-2 (mpeg2video; MPEG-PS loses H.264 frames) q 3 (-q:v 1-31)
.wmv                asf         WMV 8 (wmv2)                                   q 3 (-q:v 1-31)
=================== =========== ============================================== ==================

``STREAMS`` says, per muxer, which codecs of the source's other streams the container holds
(copied), what it converts the rest to (audio, text subtitles) and what it drops; the join
decides every stream from it before ffmpeg runs (``mux.plan_streams``).

``encoder_settings`` resolves ``--codec/--crf/--preset/--pix-fmt`` into an ``EncoderSettings``
value; an option the encoder does not take, or a value out of its range, is an error, never
ignored or clamped. ``check_output`` then asks ffmpeg itself, before any model is loaded: it
encodes a few small frames with those settings into a segment file, joins two of them into the
output container as a job does, and decodes the result. ffmpeg would otherwise quietly swap a
pixel format the encoder lacks for another, and some muxers write a stream they cannot hold as
an empty or shortened one (MPEG-TS and MPEG-PS with MPEG-4 Part 2; MPEG-PS with H.264 now and
then, which no trial can rule out, so MPEG-PS takes MPEG-1/2 video only).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

from .probe import MediaInfo, decoded_frames
from .process import FrameEncoder, Process, capture, failure_cause, ffmpeg_exe

# --codec aliases -> ffmpeg encoder; anything else is taken as an ffmpeg encoder name.
CODECS = {"h264": "libx264", "avc": "libx264", "hevc": "libx265", "h265": "libx265", "av1": "libsvtav1",
          "ffv1": "ffv1", "mpeg2": "mpeg2video", "mpeg4": "mpeg4", "wmv": "wmv2"}
# Per encoder: default quality, default preset, default pixel format.
ENCODER_DEFAULTS = {
    "libx264": dict(crf=18, preset="medium", pix_fmt="yuv420p"),
    "libx264rgb": dict(crf=18, preset="medium", pix_fmt="bgr24"),
    "libx265": dict(crf=20, preset="medium", pix_fmt="yuv420p"),
    "libsvtav1": dict(crf=30, preset="8", pix_fmt="yuv420p"),
    "libaom-av1": dict(crf=30, preset=None, pix_fmt="yuv420p"),
    "ffv1": dict(crf=None, preset=None, pix_fmt="bgr0"),
    "mpeg2video": dict(crf=3, preset=None, pix_fmt="yuv420p"),
    "mpeg4": dict(crf=3, preset=None, pix_fmt="yuv420p"),
    "wmv2": dict(crf=3, preset=None, pix_fmt="yuv420p"),
}
# The option --crf sets, per encoder, and its range (lower = better everywhere).
QUALITY = {**{e: ("-crf", 0, 51) for e in ("libx264", "libx264rgb", "libx265")},
           **{e: ("-crf", 0, 63) for e in ("libsvtav1", "libaom-av1")},
           **{e: ("-cq", 0, 51) for e in ("h264_nvenc", "hevc_nvenc")}, "av1_nvenc": ("-cq", 0, 63),
           **{e: ("-q:v", 1, 31) for e in ("mpeg1video", "mpeg2video", "mpeg4", "msmpeg4", "wmv1", "wmv2", "mjpeg",
                                           "flv")}}
_HAS_PRESET = {"libx264", "libx264rgb", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc"}
# Output container by extension: (ffmpeg muxer, codec used when --codec is not given).
CONTAINERS = {".mp4": ("mp4", "h264"), ".m4v": ("mp4", "h264"), ".mov": ("mov", "h264"),
              ".mkv": ("matroska", "h264"), ".webm": ("webm", "av1"), ".avi": ("avi", "h264"),
              ".flv": ("flv", "h264"), ".ts": ("mpegts", "h264"), ".mts": ("mpegts", "h264"),
              ".m2ts": ("mpegts", "h264"), ".mpg": ("mpeg", "mpeg2"), ".mpeg": ("mpeg", "mpeg2"),
              ".wmv": ("asf", "wmv")}
# Containers whose muxer takes other encoders' streams but loses frames of them now and then
# (MPEG-PS with H.264: 7 of 20 frames decoded in one trial, all in another), so no trial can clear them.
_HOLDS_ONLY = {"mpeg": ("mpeg1video", "mpeg2video")}
TEXT_SUBTITLES = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})


@dataclass(frozen=True)
class Holds:
    """What one output container holds besides the upscaled video (a row of ``STREAMS``).

    Attributes:
        video: codecs of further video tracks it holds (None: any); others are dropped.
        audio: audio codecs it holds (copied); others are re-encoded with ``audio_to``.
        audio_to: the ffmpeg encoder for audio it cannot hold.
        text: text subtitle codecs it holds; other text subtitles become ``text_to``.
        text_to: the encoder for text subtitles it cannot hold (None: it holds no text subtitles,
            they are dropped).
        image: image subtitle codecs it holds (DVD, PGS, DVB); others are dropped (no conversion
            from pictures to text).
        covers: cover-art codecs it holds (an attached picture); others are dropped.
        attachments: it holds attachments (fonts).
    """

    video: frozenset[str] | None
    audio: frozenset[str]
    audio_to: str
    text: frozenset[str] = frozenset()
    text_to: str | None = None
    image: frozenset[str] = frozenset()
    covers: frozenset[str] = frozenset()
    attachments: bool = False


def _set(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Per muxer. An entry is copied only where ffmpeg stream-copies it in and reads it back as the same
# codec, and players expect it there (tests/test_video_streams.py muxes every audio and text entry
# with the bundled ffmpeg); e.g. MP4 takes MP2 but reads it back as MP3, MPEG-TS writes Vorbis, FLAC
# and PCM into streams nothing reads, WebM takes Opus/Vorbis and WebVTT only; a cover picture stays
# one in MP4 only (MOV loses it, Matroska makes it a one-frame video track); FLV holds one video
# track; AVI takes H.264 only as Annex B, which an MP4 or Matroska source's track is not (the
# upscaled track gets there through the concat demuxer, which converts it). Data streams (timecode
# tracks, MP4 chapter text tracks, KLV) are never copied: chapters and timecodes travel as chapters
# and metadata.
STREAMS = {
    "mp4": Holds(video=_set("h264 hevc av1 vp9 mpeg4 mjpeg png"), audio=_set("aac mp3 ac3 eac3 opus flac alac"),
                 audio_to="aac", text=_set("mov_text"), text_to="mov_text", image=_set("dvd_subtitle"),
                 covers=_set("mjpeg png")),
    "mov": Holds(video=_set("h264 hevc mpeg4 mjpeg png prores"),
                 audio=_set("aac mp3 mp2 ac3 eac3 alac pcm_s16le pcm_s16be pcm_s24le"), audio_to="aac",
                 text=_set("mov_text"), text_to="mov_text"),
    "matroska": Holds(video=None, audio=_set("aac mp3 mp2 opus vorbis flac ac3 eac3 dts truehd alac pcm_s16le "
                                             "pcm_s24le pcm_s32le pcm_f32le wmav2"), audio_to="flac",
                      text=_set("subrip ass webvtt"), text_to="srt",
                      image=_set("dvd_subtitle hdmv_pgs_subtitle dvb_subtitle"), attachments=True),
    "webm": Holds(video=_set("vp8 vp9 av1"), audio=_set("opus vorbis"), audio_to="libopus", text=_set("webvtt"),
                  text_to="webvtt"),
    "avi": Holds(video=_set("mpeg4 mjpeg"), audio=_set("mp3 mp2 ac3 aac pcm_s16le pcm_u8"),
                 audio_to="libmp3lame"),
    "flv": Holds(video=frozenset(), audio=_set("aac mp3"), audio_to="aac"),
    "mpegts": Holds(video=_set("h264 hevc mpeg2video mpeg1video"), audio=_set("aac mp3 mp2 ac3 eac3 opus"),
                    audio_to="aac", image=_set("dvb_subtitle")),
    "mpeg": Holds(video=_set("mpeg1video mpeg2video"), audio=_set("mp2 mp3 ac3"), audio_to="mp2",
                  image=_set("dvd_subtitle")),
    "asf": Holds(video=_set("wmv1 wmv2 wmv3 vc1"), audio=_set("wmav1 wmav2 mp3 pcm_s16le"), audio_to="wmav2"),
}
_RGB_FORMATS = ("rgb", "bgr", "gbr")
_CHECK_SIZE = 256  # frame size of check_output's trial (hardware encoders refuse tiny frames)
_CHECK_FRAMES = 8  # frames per trial segment: enough for the encoders' B-frame reordering


@dataclass(frozen=True)
class EncoderSettings:
    """How segments are encoded (a small picklable value shared by every segment of a job).

    Attributes:
        encoder: ffmpeg encoder name (libx264, libx265, libsvtav1, ffv1, ...).
        crf: quality, the value of the encoder's option in ``QUALITY`` (None: the encoder's own,
            or lossless FFV1).
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
            a += [QUALITY[self.encoder][0], str(self.crf)]
        if self.preset is not None:
            a += ["-preset", self.preset]
        return a + list(self.color) + list(self.extra)

    def describe(self) -> str:
        parts = [self.encoder, self.pix_fmt]
        if self.crf is not None:
            parts.append(f"{'q' if QUALITY[self.encoder][0] == '-q:v' else 'crf'} {self.crf}")
        elif self.encoder == "ffv1" or (self.encoder.startswith("libx264") and self.crf == 0):
            parts.append("lossless")
        if self.preset is not None:
            parts.append(f"preset {self.preset}")
        return " ".join(parts)


def container_for(dst: str | os.PathLike) -> str:
    """ffmpeg muxer for an output file name."""
    ext = Path(dst).suffix.lower()
    if ext not in CONTAINERS:
        raise ValueError(f"{dst}: unknown video extension {ext!r}; use one of {', '.join(CONTAINERS)}")
    return CONTAINERS[ext][0]


def encoder_settings(dst: str | os.PathLike, *, codec: str | None = None, crf: int | None = None,
                     preset: str | None = None, pix_fmt: str | None = None, source: MediaInfo | None = None,
                     available: set[str] | None = None) -> EncoderSettings:
    """Resolve ``--codec/--crf/--preset/--pix-fmt`` for an output file (defaults in ``CONTAINERS``).

    Args:
        dst: output file (its extension picks the container and the default codec).
        codec: alias (h264, hevc, av1, ffv1, mpeg2, mpeg4, wmv) or an ffmpeg encoder name
            (libx264rgb, h264_nvenc...).
        crf, preset, pix_fmt: overrides; an option the encoder does not take is an error, never ignored.
        source: the probed source (its colour tags are copied onto YUV outputs).
        available: encoder names ffmpeg has (default: asked from ffmpeg).
    """
    container_for(dst)  # an unknown extension is refused even with --codec: the muxer comes from it
    name = codec or CONTAINERS[Path(dst).suffix.lower()][1]
    encoder = CODECS.get(name.lower(), name)
    if available is None:
        available = encoders()
    if encoder not in available:
        raise ValueError(f"--codec {name}: ffmpeg has no encoder {encoder!r}; use {', '.join(CODECS)} or an "
                         f"encoder from `{ffmpeg_exe()} -encoders`")
    d = ENCODER_DEFAULTS.get(encoder, dict(crf=None, preset=None, pix_fmt="yuv420p"))
    _check_quality(encoder, crf)
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


def _check_quality(encoder: str, crf: int | None) -> None:
    """Refuse --crf for an encoder without a quality option, or out of that option's range."""
    if crf is None:
        return
    if encoder not in QUALITY:
        raise ValueError(f"--crf does not apply to encoder {encoder}" +
                         (" (FFV1 is lossless)" if encoder == "ffv1" else "; drop --crf"))
    option, lo, hi = QUALITY[encoder]
    if not lo <= crf <= hi:
        raise ValueError(f"--crf {crf}: out of range for {encoder} ({lo}-{hi}, its {option}; lower = better)")


@lru_cache(maxsize=None)
def _encoders(exe: str) -> frozenset[str]:
    r = capture(["-encoders"])
    return frozenset(m.group(1) for m in re.finditer(r"^ V\S{5} (\S+)", r.stdout, re.MULTILINE))


def encoders() -> frozenset[str]:
    """Names of the video encoders this ffmpeg has (asked once per executable)."""
    return _encoders(ffmpeg_exe())


@lru_cache(maxsize=None)
def _pixel_formats(exe: str, encoder: str) -> tuple[str, ...]:
    m = re.search(r"Supported pixel formats: (.*)", capture(["-h", f"encoder={encoder}"]).stdout)
    return tuple(m.group(1).split()) if m else ()


def pixel_formats(encoder: str) -> tuple[str, ...]:
    """The pixel formats ``encoder`` takes, as ffmpeg lists them (empty when it lists none)."""
    return _pixel_formats(ffmpeg_exe(), encoder)


# --------------------------------------------------------------------------- the output check
def check_output(dst: str | os.PathLike, settings: EncoderSettings) -> None:
    """Refuse, in one line and before any work, output settings this ffmpeg cannot write into ``dst``.

    Checks the pixel format against the encoder's list, then encodes eight 256x256 frames with
    ``settings`` into a segment file and joins two such segments into ``dst``'s container without
    re-encoding, as a job does; all sixteen frames must decode from the joined file. Takes a few tenths of
    a second, asked once per process for the same settings and container.

    Raises:
        ValueError: unknown extension, a codec the container does not hold, a pixel format the
            encoder lacks, an encoder that fails
            (a GPU encoder without its GPU, an option it refuses) or a container that cannot hold
            its video.
    """
    container = container_for(dst)
    only = _HOLDS_ONLY.get(container)
    if only and settings.encoder not in only:
        raise ValueError(f"{dst}: the {container} container holds only {', '.join(only)} video reliably, not "
                         f"{settings.encoder}; pass --codec mpeg2, or use .ts/.mp4/.mkv for {settings.encoder}")
    formats = pixel_formats(settings.encoder)
    if formats and settings.pix_fmt not in formats:
        raise ValueError(f"--pix-fmt {settings.pix_fmt}: encoder {settings.encoder} cannot write it (it takes "
                         f"{', '.join(formats)})")
    problem = _trial(ffmpeg_exe(), container, settings)
    if problem:
        raise ValueError(f"{dst}: {problem}")


@lru_cache(maxsize=None)
def _trial(exe: str, container: str, settings: EncoderSettings) -> str | None:
    """Encode and join a tiny job in a temporary folder; the problem (one line) or None."""
    with tempfile.TemporaryDirectory(prefix="srdeploy-check-") as tmp:
        work = Path(tmp)
        log = work / "check.log"
        seg = work / f"seg.{settings.segment_format}"
        p = Process(["-v", "warning", "-y", "-f", "lavfi", "-i", f"testsrc2=size={_CHECK_SIZE}x{_CHECK_SIZE}:rate=25",
                     "-frames:v", str(_CHECK_FRAMES), *settings.args(), "-f", settings.segment_format, f"file:{seg}"], log)
        rc = p.wait()
        tail = "".join(p.tail)
        if "Incompatible pixel format" in tail:  # ffmpeg would silently pick another one
            return f"encoder {settings.encoder} cannot write pixel format {settings.pix_fmt}"
        if rc != 0:
            return f"ffmpeg cannot encode {settings.describe()}: {failure_cause(tail)}"
        listing = work / "check.ffconcat"
        # A bare name beside the list (the temporary folder's path may hold anything): see mux.concat_list.
        entry = f"file {seg.name}\nduration {_CHECK_FRAMES / 25:.2f}\n"
        listing.write_text("ffconcat version 1.0\n" + 2 * entry, encoding="utf-8")
        out = work / "joined"
        p = Process(["-v", "error", "-y", "-f", "concat", "-i", f"file:{listing}", "-map", "0:v:0",
                     "-c", "copy", "-f", container, f"file:{out}"], log)
        rc = p.wait()
        frames = decoded_frames(out, log) if rc == 0 else -1
        if frames != 2 * _CHECK_FRAMES:
            why = (failure_cause("".join(p.tail)) if rc != 0
                   else f"{max(frames, 0)} of {2 * _CHECK_FRAMES} test frames decode from it")
            return (f"the {container} container cannot hold {settings.encoder} video ({why}); pass --codec "
                    f"with a codec it holds, or use another extension")
    return None


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
