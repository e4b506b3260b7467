"""Video tasks for the batch, on the ffmpeg segment layer (``srdeploy.runtime.media.segments``).

A video is three kinds of task, all run by workers (they see the files; the driver may not):

    video-plan  probe the source, cut it into segments   -> the VideoJob, its frame count, which
                                                             segments are already finished
    segment     decode, upscale and encode segment k      -> seg-0000k in the video's work folder
    join        join the segments, mux every other stream -> the output, atomically; work folder removed

A segment is the layer's ``SegmentTask`` (small, picklable; it names its own file), and
``process_segment`` returns at once for a finished segment, so a retried or resumed segment is
either reused or redone, never half-used. Planning again on resume gives the same segments
(the plan depends only on the source and the settings, which ``job.json`` in the work folder
pins, exactly as ``srdeploy video --resume`` does), so nothing about a video needs to survive
in driver memory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

UNAVAILABLE = ("batch: videos need the ffmpeg segment layer (srdeploy.runtime.media.segments: process segment k, "
               "join and mux), which this installation lacks; upscale videos with `srdeploy video`")


def unavailable_reason() -> str | None:
    """None when video tasks can run here, else the one-line reason."""
    try:
        from ..media import segments  # noqa: F401
    except ImportError:
        return UNAVAILABLE
    return None


def fingerprint(upscaler, model: str) -> dict:
    """What job.json records besides the source and encoder (the same keys as ``srdeploy video``)."""
    session = upscaler.session
    return {"model": str(os.path.abspath(model)), "model_size": os.path.getsize(model), "backend": session.backend,
            "precision": session.precision, "tile": upscaler.tile, "tile_pad": upscaler.tile_pad}


def plan_video(src: str, dst: str, upscaler, model: str, *, codec: str | None, crf: int | None,
               segment_frames: int | None) -> dict:
    """Probe ``src`` and cut it into segments for ``dst``; reuse the work folder of an earlier attempt.

    Returns:
        {"job": VideoJob, "frames": N, "done": [bool per segment], "notices": [...]}.

    Raises:
        ValueError/OSError (bad input, one line naming the file), FFmpegError.
    """
    from ..media import segments
    from .job import read_json, write_json

    src_p, dst_p = Path(src), Path(dst)
    segments.check_source(src_p)
    source, settings = segments.probe_request(src_p, dst_p, codec=codec, crf=crf)
    work = segments.work_folder(dst_p)
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob(".seg-*.tmp.*"):  # a killed attempt's partial segment
        stale.unlink(missing_ok=True)
    job = segments.plan_job(source, dst_p, upscaler.scale, settings, segment_frames=segment_frames, work=work)
    record = segments.job_record(job, fingerprint(upscaler, model))
    job_file = work / segments.JOB_FILE
    if job_file.is_file():
        old = read_json(job_file)
        changed = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k))
        if changed:
            raise ValueError(f"{dst}: the work folder {work} holds segments made with different {', '.join(changed)}; "
                             "delete that folder to start this video again")
    else:
        write_json(job_file, record)
    return {"job": job, "frames": job.frames, "done": [segments.segment_done(t) for t in job.tasks],
            "notices": list(job.notices)}


def run_segment(seg, upscaler, *, batch: int) -> int:
    """Process one segment (reused if already finished); returns its frame count."""
    from ..media import segments

    segments.process_segment(seg, upscaler, batch=batch)
    return seg.count


def join_video(job) -> list[str]:
    """Join the finished segments and mux the source's other streams into ``job.dst`` atomically.

    Returns:
        The muxer's notices (streams converted or dropped).
    """
    from ..atomic import atomic_target
    from ..media import segments

    with atomic_target(job.dst, keep_suffix=True, create=False) as tmp:
        mux = segments.join_segments(job, tmp, audio=True)
    shutil.rmtree(job.work, ignore_errors=True)
    return list(mux.notices)


def input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this video cannot be done" (reported by name, not retried)."""
    try:
        from ..media.ffmpeg import FFmpegError
    except ImportError:
        return ()
    return (FFmpegError,)
