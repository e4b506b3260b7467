"""Joining: encoded segments + every other stream of the source -> the output, without re-encoding the video.

Also the OpenCV encoder's audio step (``add_audio``): OpenCV writes video only, so the source's
audio tracks are muxed in afterwards, through the same ffmpeg front-end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

from ...atomic import atomic_target, write_text
from .codecs import container_for
from .probe import MediaInfo, StreamInfo
from .process import FFmpegError, Process, run


@dataclass
class MuxPlan:
    """Which source streams go into the output and how (``join_and_mux`` fills ``notices``)."""

    copy: list[StreamInfo] = field(default_factory=list)
    encode: dict[int, str] = field(default_factory=dict)  # stream index -> encoder
    dropped: dict[int, str] = field(default_factory=dict)  # stream index -> reason
    notices: list[str] = field(default_factory=list)


_TEXT_SUBS = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"}
# What a stream the container cannot hold is re-encoded to, per muxer (absent: dropped).
_FALLBACK_AUDIO = {"mp4": "aac", "mov": "aac", "matroska": "flac", "webm": "libopus", "avi": "libmp3lame",
                   "flv": "aac", "mpegts": "aac", "mpeg": "mp2", "asf": "wmav2"}
_FALLBACK_SUBS = {"mp4": "mov_text", "mov": "mov_text", "matroska": "srt", "webm": "webvtt"}


def join_and_mux(segments: Sequence[Path], durations: Sequence[Fraction], source: MediaInfo, dst_tmp: Path,
                 container: str, offset: float, work: Path, *, hevc_tag: bool = False, audio: bool = True) -> MuxPlan:
    """Join encoded segments without re-encoding and add every other stream of the source.

    The segments are listed in an ffconcat file with exact durations (cumulative start times
    rounded once, so no drift accumulates); the video is placed ``offset`` seconds after the
    container start, as in the source, so audio and subtitles stay in sync. All other streams
    (audio tracks, subtitles, attachments such as Matroska fonts, data), chapters and global
    metadata are copied; the source video stream's metadata goes onto the new video stream.
    A stream the container cannot hold is re-encoded (audio -> AAC/FLAC/Opus/MP3/MP2/WMA, text
    subtitles -> mov_text/SRT/WebVTT) or dropped; each case becomes one line in ``notices``.

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
    write_text(listing, "\n".join(lines) + "\n", fsync=False)
    plan = _plan_streams(source, container, audio)
    # Each failed attempt names one stream the container refused: convert or drop it and try again.
    for _ in range(len(source.streams) + 1):
        p = Process(_mux_args(listing, source, plan, container, offset, dst_tmp, hevc_tag), log)
        if p.wait() == 0:
            break
        refused = _refused_stream("".join(p.tail), plan)
        if refused is None:
            raise p.error(f"{dst_tmp}: joining the segments failed")
        _convert_or_drop(plan, refused, container)
        dst_tmp.unlink(missing_ok=True)
    else:
        raise FFmpegError(f"{dst_tmp}: joining the segments failed (ffmpeg log: {log})",
                          f"a stream was still refused after {len(source.streams) + 1} attempts", log)
    for s in source.streams:
        if s.index in plan.encode:
            plan.notices.append(f"stream #{s.index} ({s.kind} {s.codec}) re-encoded to {plan.encode[s.index]}: "
                                f"{container} cannot hold {s.codec}")
        elif s.index in plan.dropped:
            plan.notices.append(f"stream #{s.index} ({s.kind} {s.codec}) dropped: {plan.dropped[s.index]}")
    return plan


def _plan_streams(source: MediaInfo, container: str, audio: bool) -> MuxPlan:
    """The first attempt: copy every stream but the upscaled one (attachments only into Matroska)."""
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
    return plan


def _refused_stream(tail: str, plan: MuxPlan) -> StreamInfo | None:
    """The source stream a failed mux refused: named by its output index ("Could not find tag for
    codec X in stream #2"), or only by its kind (MPEG-PS: "Unsupported audio codec"), then the
    first such stream not yet converted. None: the failure is not about one stream."""
    m = re.search(r"(?:Could not find tag for codec \S+ in stream|stream) #(\d+)", tail)
    if m:
        out_index = int(m.group(1))
        return plan.copy[out_index - 1] if 1 <= out_index <= len(plan.copy) else None
    for kind in ("audio", "subtitle"):
        if re.search(rf"\b{kind}\b", tail, re.IGNORECASE):
            return next((s for s in plan.copy if s.kind == kind and s.index not in plan.encode), None)
    return None


def _convert_or_drop(plan: MuxPlan, s: StreamInfo, container: str) -> None:
    """A stream the container refused: re-encode it to the container's fallback, or drop it."""
    if s.index in plan.encode or s.kind not in ("audio", "subtitle"):
        plan.copy.remove(s)
        plan.encode.pop(s.index, None)
        plan.dropped[s.index] = f"{container} cannot hold {s.kind} codec {s.codec}"
        return
    enc = _FALLBACK_AUDIO.get(container, "aac") if s.kind == "audio" else (
        _FALLBACK_SUBS.get(container) if s.codec in _TEXT_SUBS else None)
    if enc is None:
        plan.copy.remove(s)
        why = ("image subtitles cannot be converted to text" if s.codec not in _TEXT_SUBS
               else f"{container} holds no text subtitles")
        plan.dropped[s.index] = f"{container} cannot hold {s.kind} codec {s.codec} ({why})"
    else:
        plan.encode[s.index] = enc


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


def add_audio(source: MediaInfo, video: Path, log: Path) -> str:
    """Mux the audio tracks of ``source`` into the video-only file ``video``, replaced atomically.

    Tries copying the audio first, then re-encoding it to the container's usual codec (the
    join's fallback: AAC for MP4/MOV, FLAC for Matroska, MP3 for AVI...).

    Args:
        source: the probed source.  video: the encoded file (its extension names the container).
        log: ffmpeg's stderr (appended).

    Returns:
        "none" (the source has no audio), "copied" or "re-encoded".

    Raises:
        FFmpegError: neither worked (cause and log named); ``video`` is left as it was.
    """
    if not source.audio:
        return "none"
    container = container_for(video)
    base = ["-v", "error", "-y", "-i", f"file:{video}", "-i", f"file:{source.path}", "-map", "0:v:0", "-map", "1:a",
            "-c:v", "copy"]
    attempts = (("copied", ["-c:a", "copy"]), ("re-encoded", ["-c:a", _FALLBACK_AUDIO.get(container, "aac")]))
    for state, codec_args in attempts:
        try:
            with atomic_target(video, keep_suffix=True, create=False, fsync=False) as out:
                run(base + codec_args + ["-f", container, f"file:{out}"], log, f"{video}: adding the audio")
            return state
        except FFmpegError as exc:
            error = exc
    raise error
