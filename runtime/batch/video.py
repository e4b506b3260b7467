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
pins through ``jobs.JobFolder``, exactly as ``srdeploy video --resume`` does), so nothing about a
video needs to survive in driver memory. Output settings (``--codec``, ``--crf`` for each output
container) are checked by the driver before the workers start (``output_problems``).
"""

from __future__ import annotations

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


def output_problems(tasks: list[dict], *, codec: str | None, crf: int | None) -> dict[str, str]:
    """Video tasks whose output settings ffmpeg cannot write (``--codec``/``--crf`` for that
    container), checked once per extension before any worker opens the model: task id -> the
    one-line error, named by the task's input."""
    from ..media import ffmpeg as ff

    verdicts: dict[str, str | None] = {}
    problems = {}
    for t in tasks:
        if t["kind"] != "video":
            continue
        ext = Path(t["dst"]).suffix.lower()
        if ext not in verdicts:
            try:
                ff.check_output(t["dst"], ff.encoder_settings(t["dst"], codec=codec, crf=crf))
                verdicts[ext] = None
            except ValueError as exc:
                verdicts[ext] = str(exc).replace(f"{t['dst']}: ", "")
        if verdicts[ext]:
            problems[t["id"]] = f"{t['src']}: {verdicts[ext]}"
    return problems


def plan_video(src: str, dst: str, upscaler, model: str, *, codec: str | None, crf: int | None,
               segment_frames: int | None) -> dict:
    """Probe ``src`` and cut it into segments for ``dst``; reuse the work folder of an earlier attempt.

    Returns:
        {"job": VideoJob, "frames": N, "done": [bool per segment], "notices": [...]}.

    Raises:
        ValueError/OSError (bad input, one line naming the file), FFmpegError, JobLocked (a
        `srdeploy video` is writing ``dst``).
    """
    from ..jobs import JobFolder, model_fingerprint
    from ..media import segments

    src_p, dst_p = Path(src), Path(dst)
    segments.check_source(src_p)
    source, settings = segments.probe_request(src_p, dst_p, codec=codec, crf=crf)
    work = segments.work_folder(dst_p)
    # A `srdeploy video` writing the same output owns this folder: leave it alone (reported by name).
    JobFolder(work, segments.JOB_FILE).check_free(dst)
    work.mkdir(parents=True, exist_ok=True)
    segments.drop_partial_segments(work)  # a killed attempt's
    job = segments.plan_job(source, dst_p, upscaler.scale, settings, segment_frames=segment_frames, work=work)
    segments.pin_job(job, model_fingerprint(upscaler, model),
                     refusal=f"{dst}: the work folder {work} holds segments made with",
                     hint="delete that folder to start this video again")
    return {"job": job, "frames": job.frames, "done": [segments.segment_done(t) for t in job.tasks],
            "notices": list(job.notices) + list(job.warnings)}


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
    from ..media import segments

    return list(segments.finish_job(job, audio=True).notices)


def input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this video cannot be done" (reported by name, not retried)."""
    from ..jobs import JobLocked

    try:
        from ..media.ffmpeg import FFmpegError
    except ImportError:
        return (JobLocked,)
    return (FFmpegError, JobLocked)
