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
from .codecs import STREAMS, TEXT_SUBTITLES, Holds, container_for
from .probe import MediaInfo, StreamInfo
from .process import Process, run


@dataclass
class MuxPlan:
    """Which source streams go into the output and how (``join_and_mux`` fills ``notices``)."""

    copy: list[StreamInfo] = field(default_factory=list)
    encode: dict[int, str] = field(default_factory=dict)  # stream index -> encoder
    dropped: dict[int, str] = field(default_factory=dict)  # stream index -> reason
    notices: list[str] = field(default_factory=list)


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # what the concat demuxer's safe mode accepts


def join_and_mux(segments: Sequence[Path], durations: Sequence[Fraction], source: MediaInfo, dst_tmp: Path,
                 container: str, offset: float, work: Path, *, hevc_tag: bool = False, audio: bool = True) -> MuxPlan:
    """Join encoded segments without re-encoding and add every other stream of the source.

    The segments are listed in an ffconcat file with exact durations (``concat_list``); the
    video is placed ``offset`` seconds after the container start, as in the source, so audio and
    subtitles stay in sync. The other streams (audio tracks, subtitles, attachments such as
    Matroska fonts), chapters and global metadata are copied; the source video stream's metadata
    goes onto the new video stream. What the container cannot hold is decided before ffmpeg runs,
    from ``codecs.STREAMS`` (``plan_streams``): re-encoded (audio -> the container's codec, text
    subtitles -> mov_text/SRT/WebVTT) or dropped; each case becomes one line in ``notices``.

    Args:
        segments: encoded segment files, in order, all in ``work``.  durations: their exact durations (seconds).
        source: the probed source.  dst_tmp: file to write (renamed by the caller).
        container: ffmpeg muxer of the output.  offset: seconds from container start to the first frame.
        work: folder of the segments, the concat list and the log.  hevc_tag: tag HEVC as hvc1 (MP4/MOV players).
        audio: False leaves the audio tracks out (``--no-audio``; no notice).

    Raises:
        FFmpegError: the mux failed (one line naming the cause and ``work/join.log``).
    """
    log = work / "join.log"
    listing = concat_list(segments, durations, work)
    plan = plan_streams(source, container, audio)
    p = Process(_mux_args(listing, source, plan, container, offset, dst_tmp, hevc_tag), log)
    if p.wait() != 0:
        raise p.error(f"{dst_tmp}: joining the segments failed")
    return plan


def concat_list(segments: Sequence[Path], durations: Sequence[Fraction], work: Path) -> Path:
    """Write ``work/segments.ffconcat``: each segment by its bare name and exact duration.

    The names are relative to the list (the concat demuxer resolves them against it) and are our
    own ``seg-00000.mov``: a user's file or folder name (a quote, a newline, a ``%``) never
    appears in the list, and ffmpeg's safe mode, left on, refuses anything else. Durations are
    cumulative start times rounded once, so no drift accumulates.

    Raises:
        ValueError: a segment outside ``work`` or with a name the safe mode would refuse (a bug).
    """
    lines = ["ffconcat version 1.0"]
    acc = Fraction(0)
    prev_us = 0
    for seg, dur in zip(segments, durations):
        seg = Path(seg)
        if seg.parent.resolve() != Path(work).resolve() or not _SAFE_NAME.fullmatch(seg.name):
            raise ValueError(f"{seg}: segments must be plain names inside the work folder {work}")
        acc += dur
        end_us = round(acc * 1_000_000)
        lines += [f"file {seg.name}", f"duration {(end_us - prev_us) / 1e6:.6f}"]
        prev_us = end_us
    listing = Path(work) / "segments.ffconcat"
    write_text(listing, "\n".join(lines) + "\n", fsync=False)
    return listing


def plan_streams(source: MediaInfo, container: str, audio: bool = True) -> MuxPlan:
    """Decide, from ``codecs.STREAMS``, what happens to each source stream but the upscaled one:
    copied, re-encoded (``plan.encode``) or dropped (``plan.dropped``), with one notice each
    for the last two. ``audio`` False leaves audio out without a notice (``--no-audio``)."""
    holds = STREAMS[container]
    plan = MuxPlan()
    for s in source.streams:
        if s.index == source.video or (s.kind == "audio" and not audio):
            continue
        verdict = _verdict(s, holds, container)
        if verdict is None:
            plan.copy.append(s)
            if s.kind == "video" and not s.attached_pic:
                plan.notices.append(f"stream #{s.index} ({s.codec} video) copied as it is; only stream "
                                    f"#{source.video} is upscaled")
        elif verdict.startswith("encode:"):
            plan.copy.append(s)
            plan.encode[s.index] = verdict.split(":", 1)[1]
            plan.notices.append(f"stream #{s.index} ({s.kind} {s.codec}) re-encoded to {plan.encode[s.index]}: "
                                f"{container} cannot hold {s.codec}")
        else:
            plan.dropped[s.index] = verdict
            plan.notices.append(f"stream #{s.index} ({s.kind} {s.codec}) dropped: {verdict}")
    return plan


def _verdict(s: StreamInfo, holds: Holds, container: str) -> str | None:
    """None (copy), "encode:ENCODER", or why the stream is dropped."""
    if s.kind == "audio":
        return None if s.codec in holds.audio else f"encode:{holds.audio_to}"
    if s.kind == "subtitle" and s.codec in TEXT_SUBTITLES:
        if s.codec in holds.text:
            return None
        return f"encode:{holds.text_to}" if holds.text_to else f"{container} holds no text subtitles"
    if s.kind == "subtitle":
        return None if s.codec in holds.image else (f"{container} cannot hold {s.codec} subtitles (image "
                                                    "subtitles cannot be converted to text)")
    if s.kind == "video" and s.attached_pic:
        return None if s.codec in holds.covers else f"{container} cannot hold a {s.codec} cover picture"
    if s.kind == "video":
        return None if holds.video is None or s.codec in holds.video else f"{container} cannot hold {s.codec} video"
    if s.kind == "attachment":
        return None if holds.attachments else f"attachments need .mkv; {container} cannot hold them"
    return (f"{s.kind} streams are not carried (chapters and timecodes are kept as chapters and metadata)")


def _mux_args(listing: Path, source: MediaInfo, plan: MuxPlan, container: str, offset: float, dst: Path,
              hevc_tag: bool) -> list[str]:
    args = ["-v", "error", "-y"]
    if abs(offset) > 1e-9:
        args += ["-itsoffset", f"{offset:.6f}"]
    args += ["-f", "concat", "-i", f"file:{listing}", "-i", f"file:{source.path}",
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

    Each track is copied when the container holds its codec and re-encoded to the container's
    codec otherwise (``codecs.STREAMS``, as the join decides: AAC for MP4/MOV, FLAC for Matroska,
    MP3 for AVI...).

    Args:
        source: the probed source.  video: the encoded file (its extension names the container).
        log: ffmpeg's stderr (appended).

    Returns:
        "none" (the source has no audio), "copied" or "re-encoded" (at least one track).

    Raises:
        FFmpegError: the mux failed (cause and log named); ``video`` is left as it was.
    """
    if not source.audio:
        return "none"
    container = container_for(video)
    holds = STREAMS[container]
    args = ["-v", "error", "-y", "-i", f"file:{video}", "-i", f"file:{source.path}", "-map", "0:v:0", "-map", "1:a",
            "-c:v", "copy"]
    encoded = False
    for k, s in enumerate(source.audio):
        codec = "copy" if s.codec in holds.audio else holds.audio_to
        encoded |= codec != "copy"
        args += [f"-c:a:{k}", codec]
    with atomic_target(video, keep_suffix=True, create=False, fsync=False) as out:
        run(args + ["-f", container, f"file:{out}"], log, f"{video}: adding the audio")
    return "re-encoded" if encoded else "copied"
