"""Segmented, resumable video upscaling on ffmpeg: plan -> process segment k -> join and mux.

A job is cut into segments of ``segment_frames`` frames (default about 10 s). Each segment is an
independent, idempotent task described by a small picklable ``SegmentTask`` (source path, k,
frame range, seek time, sizes, encoder settings, work folder): ``process_segment(task,
upscaler)`` decodes exactly those frames (ffmpeg, BGR24 through a pipe), upscales them and pipes
them into an ffmpeg encoder writing a temporary file in the work folder, checks its frame count,
renames it to ``seg-0000k.mov`` and records its sha256 in ``tasks/seg-0000k.json``. A finished
segment whose bytes still match that checksum is never rewritten: running the task again
returns at once, so retry and resume are the same code, and segments can run in any order, in
parallel, on other machines that see the same folder (the Ray batch does that). A segment whose
bytes changed (a bad disk, a copy gone wrong) or that has no checksum is redone.
``finish_job(job)`` then joins them without re-encoding (ffmpeg concat demuxer, ``join_segments``)
and muxes every other stream of the source into a temporary file beside the output, renamed at
the end (``atomic_target``, as every file here).

Before any of it, ``check_request`` refuses what can be refused without a model: the source (a
folder, a still image, no video stream), the output name and the output settings
(``ffmpeg.check_output``: container, codec, quality, pixel format).

The work folder is hidden beside the output: ``.OUT_NAME.srdeploy-video/``. It holds
``job.json`` (what the segments were made from: source size and mtime, encoder settings,
segment length, the model's sha256), the finished segments with their checksums, one ffmpeg log
per process and ``lock``. A job owns the folder for its whole run (``jobs.JobFolder.lock``): a
second job on the same output is refused at once, naming the first. The folder is removed after
a successful join and kept after a failure, so ``--resume`` continues from the first unfinished
segment; a job.json that does not match the new command is refused, naming what changed, never
mixed (``jobs.JobFolder``, the batch's job folder too).

ffmpeg is given the segments by their bare names (``seg-00000.mov``) in a list written in the
work folder itself, so no name chosen by a user (quotes, newlines, ``%``, a leading ``-``) ever
appears inside an ffmpeg list or filter string; paths travel only as whole arguments, behind ``file:``.

Timing. A constant-frame-rate source keeps its exact rate (snapped from the timestamps, e.g.
24000/1001, see ``ffmpeg.analyse_timing``). A variable-frame-rate source is written at its mean
rate N / duration: frame count and duration stay equal and the first frame keeps its offset from
the container start, so audio starts and ends in sync; in between a frame may be shown up to the
printed drift away from its source time.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

from ..atomic import atomic_target, occupied
from ..jobs import LOCK_FILE, JobFolder
from ..progress import progress_bar
from . import ffmpeg as ff
from .files import IMAGE_EXTS
from .pipeline import run_pipeline
from .video import VideoStats

DEFAULT_SEGMENT_SECONDS = 10
WORK_SUFFIX = ".srdeploy-video"
JOB_FILE = "job.json"


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class SegmentTask:
    """Segment ``index`` of a job: frames ``start .. start+count-1`` of ``source``.

    Picklable and small, so a scheduler can ship it to another process or machine. The output
    file and log are derived from ``work`` and ``index``.

    Attributes:
        source: source video path.  video_stream: index of the stream to upscale.
        index: segment number k.  start: first frame.  count: frames in this segment.
        seek: seconds from the container start, between frame start-1 and start (None for k = 0).
        width, height: decoded frame size.  scale: model scale.
        rate: output frame rate (exact).  sar: sample aspect ratio.
        settings: encoder settings.  work: the job's work folder.
    """

    source: str
    video_stream: int
    index: int
    start: int
    count: int
    seek: float | None
    width: int
    height: int
    scale: int
    rate: Fraction
    sar: Fraction
    settings: ff.EncoderSettings
    work: str

    @property
    def name(self) -> str:
        """``seg-0000k``: the segment file's stem, its log's and its state's (``tasks/seg-0000k.json``)."""
        return f"seg-{self.index:05d}"

    @property
    def path(self) -> Path:
        return Path(self.work) / f"{self.name}.{self.settings.segment_format}"

    @property
    def log(self) -> Path:
        return Path(self.work) / f"{self.name}.log"

    @property
    def duration(self) -> Fraction:
        return Fraction(self.count) / self.rate


def segment_problem(task: SegmentTask) -> str | None:
    """None when the segment is finished and intact (its bytes match the sha256 recorded when it
    was written); else why it must be made: "" (not written yet) or what is wrong with the file."""
    if not task.path.is_file():
        return ""
    folder = JobFolder(Path(task.work), JOB_FILE)
    if folder.is_finished(task.name, task.path):
        return None
    if folder.read_state(task.name) is None:
        return "has no recorded checksum (its run stopped before recording one)"
    return "does not match the checksum recorded when it was written (damaged)"


def segment_done(task: SegmentTask) -> bool:
    """Whether the segment is finished and intact (``segment_problem`` is None)."""
    return segment_problem(task) is None


def process_segment(task: SegmentTask, upscaler, *, batch: int = 1,
                    on_frame: Callable[[int], None] | None = None) -> Path:
    """Decode, upscale and encode one segment into ``task.path`` (atomically); reuse a finished one.

    Args:
        task: the segment.  upscaler: a ``srdeploy.runtime.upscale.Upscaler`` on an open session.
        batch: frames per inference call (when a frame fits in one tile).
        on_frame: called with 1 after each encoded frame (progress).

    Returns:
        The segment file.

    Raises:
        FFmpegError: decoding or encoding failed (one line: cause and log file).
        ValueError: the source gave fewer frames than planned (damaged file).
    """
    if segment_done(task):
        return task.path
    folder = JobFolder(Path(task.work), JOB_FILE)
    folder.clear_state(task.name)  # a damaged segment's: the new file gets its own
    info = ff.MediaInfo(path=Path(task.source), format="", start=0.0, duration=None, streams=(),
                        video=task.video_stream)
    # A hidden temporary name per attempt (two workers may retry the same segment), renamed when whole.
    with atomic_target(task.path, keep_suffix=True, create=False) as tmp:
        decoder = ff.FrameDecoder(info, task.width, task.height, task.seek, task.count, task.log)
        encoder = None
        try:
            encoder = ff.FrameEncoder(tmp, task.width * task.scale, task.height * task.scale, task.rate,
                                      task.settings, task.log, sar=task.sar)
            run_pipeline(upscaler, decoder, encoder.write, batch=batch, on_frame=on_frame)
            if encoder.frames != task.count:
                raise ValueError(f"{task.source}: segment {task.index} decoded {encoder.frames} of {task.count} "
                                 f"frames (from frame {task.start}); the file is damaged there (ffmpeg log: {task.log})")
            decoder.close()
            encoder.close()
        except BaseException:
            if encoder is not None:
                encoder.abort()
            decoder.close()
            raise
        written = ff.count_packets(tmp, task.log)
        if written != task.count:
            cause = f"the encoded segment holds {written} frames, expected {task.count}"
            raise ff.FFmpegError(f"{task.path}: {cause} (ffmpeg log: {task.log})", cause, task.log)
    folder.mark_done(task.name, task.path, checksum=True, frames=task.count)
    return task.path


# --------------------------------------------------------------------------- job
@dataclass
class VideoJob:
    """A planned job: the probed source, timing, encoder settings and the segment tasks."""

    source: ff.MediaInfo
    dst: Path
    work: Path
    container: str
    settings: ff.EncoderSettings
    times: ff.FrameTimes
    timing: ff.Timing
    tasks: list[SegmentTask]
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return self.times.count


def work_folder(dst: str | os.PathLike) -> Path:
    """The hidden work folder of an output: ``.NAME.srdeploy-video`` beside it."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}{WORK_SUFFIX}")


def plan_job(source: ff.MediaInfo, dst: Path, scale: int, settings: ff.EncoderSettings, *,
             segment_frames: int | None = None, work: Path | None = None) -> VideoJob:
    """Time the source's frames and cut the job into segments (nothing is written but a log).

    Args:
        source: probed source.  dst: output file.  scale: model scale.
        settings: encoder settings.  segment_frames: frames per segment (default about 10 s).
        work: work folder (default ``work_folder(dst)``; must exist, for the probe log).
    """
    work = work or work_folder(dst)
    times = ff.frame_times(source, work / "probe.log")
    timing = ff.analyse_timing(times, source.start)
    out_w, out_h = times.width * scale, times.height * scale
    if settings.pix_fmt.startswith(("yuv420", "yuv422", "nv12", "p010")) and (out_w % 2 or out_h % 2):
        raise ValueError(f"{source.path}: output size {out_w}x{out_h} is odd, which {settings.pix_fmt} cannot hold; "
                         "use --pix-fmt yuv444p")
    n = segment_frames or max(1, round(DEFAULT_SEGMENT_SECONDS * float(timing.rate)))
    if n < 1:
        raise ValueError(f"--segment-frames must be >= 1, got {n}")
    tasks = []
    for k, start in enumerate(range(0, times.count, n)):
        count = min(n, times.count - start)
        seek = None
        if start > 0:
            mid = Fraction(times.pts[start - 1] + times.pts[start], 2) * times.tb
            seek = float(mid) - source.start
        tasks.append(SegmentTask(source=str(source.path), video_stream=source.video, index=k, start=start,
                                 count=count, seek=seek, width=times.width, height=times.height, scale=scale,
                                 rate=timing.rate, sar=times.sar, settings=settings, work=str(work)))
    notices = []
    if not timing.cfr:
        notices.append(f"{source.path}: variable frame rate; written at the mean rate "
                       f"{float(timing.rate):.4g} fps (same {times.count} frames and duration; frames shown up to "
                       f"{1000 * ff.vfr_drift(times, timing.rate):.0f} ms from their source time)")
    warnings = []
    if times.damage:  # what OpenCV's frame count used to reveal: a cut or damaged file
        warnings.append(f"{source.path}: the video stream is damaged or cut short (ffmpeg: {times.damage}); the "
                        f"output holds the {times.count} frame(s) that decode")
    return VideoJob(source=source, dst=dst, work=work, container=ff.container_for(dst), settings=settings,
                    times=times, timing=timing, tasks=tasks, notices=notices, warnings=warnings)


def job_record(job: VideoJob, fingerprint: dict) -> dict:
    """What job.json stores: everything that decides the segment files' content."""
    st = job.source.path.stat()
    return {"source": str(job.source.path.resolve()), "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns,
            "settings": asdict(job.settings), "segments": [[t.start, t.count] for t in job.tasks],
            "rate": str(job.timing.rate), "size": [job.times.width, job.times.height], **fingerprint}


def pin_job(job: VideoJob, fingerprint: dict, *, refusal: str, hint: str) -> None:
    """Write job.json in the work folder, or refuse when the one there records other settings
    (``jobs.JobFolder.pin``: the message lists every one that changed)."""
    JobFolder(job.work, JOB_FILE).pin(job_record(job, fingerprint), refusal=refusal, hint=hint)


def join_segments(job: VideoJob, tmp: Path, *, audio: bool = True) -> ff.MuxPlan:
    """Join the job's finished segments and mux the source's other streams into ``tmp``; check the frame count."""
    paths = [t.path for t in job.tasks]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"{job.dst}: segments not finished: {', '.join(missing[:5])}")
    plan = ff.join_and_mux(paths, [t.duration for t in job.tasks], job.source, tmp, job.container,
                           job.timing.offset, job.work, hevc_tag=job.settings.encoder == "libx265", audio=audio)
    got = ff.count_packets(tmp, job.work / "join.log")
    if got != job.frames:
        cause = f"the joined video holds {got} frames, expected {job.frames}"
        raise ff.FFmpegError(f"{job.dst}: {cause} (ffmpeg log: {job.work / 'join.log'})", cause, job.work / "join.log")
    return plan


def finish_job(job: VideoJob, *, audio: bool = True, overwrite: bool = True) -> ff.MuxPlan:
    """Join into ``job.dst`` (a hidden temporary file renamed when whole), then remove the work folder.

    Raises:
        FFmpegError: the join failed; the segments stay in the work folder for a resume.
    """
    with atomic_target(job.dst, keep_suffix=True, create=False, overwrite=overwrite) as tmp:
        mux = join_segments(job, tmp, audio=audio)
    shutil.rmtree(job.work, ignore_errors=True)
    return mux


@dataclass
class FFmpegVideoStats(VideoStats):
    """What ``upscale_video_ffmpeg`` did: the OpenCV path's VideoStats plus the segment record.

    ``fps`` and ``seconds`` cover the segments processed in this run (decode, inference, encode);
    ``total_seconds`` the whole call (probe, segments, join and mux).
    """

    segments: int = 0
    reused: int = 0
    total_seconds: float = 0.0
    notices: list[str] = field(default_factory=list)


def upscale_video_ffmpeg(upscaler, src: str | os.PathLike, dst: str | os.PathLike, *, codec: str | None = None,
                         crf: int | None = None, preset: str | None = None, pix_fmt: str | None = None,
                         segment_frames: int | None = None, resume: bool = False, overwrite: bool = False,
                         batch: int = 1, progress: bool = True, audio: bool = True, fingerprint: dict | None = None,
                         log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> FFmpegVideoStats:
    """Upscale ``src`` into ``dst`` through ffmpeg, in resumable segments, keeping every stream.

    Args:
        upscaler: ``Upscaler`` on an open session.  src, dst: files (container from dst's extension).
        codec, crf, preset, pix_fmt: encoder choice (``ffmpeg.encoder_settings``).
        segment_frames: frames per segment (default about 10 s).
        resume: continue the unfinished job in the work folder (finished segments reused).
        overwrite: replace an existing ``dst``.  batch: frames per inference call.
        progress: progress bar on stderr (probe, frames, join).  audio: False leaves audio tracks out.
        fingerprint: extra identity of the job (``jobs.model_fingerprint``) stored in job.json.
        log: where notices go.

    Raises:
        FileNotFoundError, IsADirectoryError, ValueError: bad input or output settings (one line).
        FileExistsError: dst exists without overwrite, or an unfinished job without ``resume``.
        PermissionError: the output folder is not writable.
        FFmpegError: a write failed (cause and log named; finished segments kept for --resume).
    """
    src, dst = Path(src), Path(dst)
    source, settings = check_request(src, dst, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt,
                                     segment_frames=segment_frames, batch=batch, overwrite=overwrite)
    with own_work(dst, resume=resume, overwrite=overwrite) as work:
        try:
            return _run_job(upscaler, source, dst, work, settings, fingerprint or {}, segment_frames=segment_frames,
                            batch=batch, progress=progress, overwrite=overwrite, audio=audio, log=log)
        except BaseException as exc:
            _tidy_failed(work, keep_logs=isinstance(exc, ff.FFmpegError))
            raise


def check_request(src: str | os.PathLike, dst: str | os.PathLike, *, codec: str | None = None,
                  crf: int | None = None, preset: str | None = None, pix_fmt: str | None = None,
                  segment_frames: int | None = None, batch: int = 1,
                  overwrite: bool = False) -> tuple[ff.MediaInfo, ff.EncoderSettings]:
    """Everything about a request that can be refused before a model is opened (the CLI calls it
    first): the numbers, the source, the output name, another job writing the output, and the
    output settings (``probe_request``).

    Returns:
        (the probed source, the encoder settings).
    """
    src, dst = Path(src), Path(dst)
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    if segment_frames is not None and segment_frames < 1:
        raise ValueError(f"--segment-frames must be >= 1, got {segment_frames}")
    check_source(src)
    if dst.is_dir():
        raise IsADirectoryError(f"{dst}: output is a folder; give a video file name (e.g. out.mp4)")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the output would overwrite the input video; choose another output name")
    if not overwrite and occupied(dst):  # a dangling symlink too
        raise FileExistsError(f"{dst}: output exists; pass --overwrite to replace it")
    JobFolder(work_folder(dst), JOB_FILE).check_free(str(dst))  # another job on dst: refused before the model opens
    return probe_request(src, dst, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt)


def probe_request(src: Path, dst: Path, *, codec: str | None = None, crf: int | None = None,
                  preset: str | None = None, pix_fmt: str | None = None):
    """Probe ``src`` for an upscale into ``dst``: (MediaInfo, EncoderSettings); one-line errors for
    an output container, codec or option ffmpeg cannot write (``ffmpeg.check_output``), a still
    image or a file without video."""
    ff.container_for(dst)
    source = ff.probe(src)
    if source.is_still_image:
        raise ValueError(f"{src}: is a still image, not a video; use srdeploy upscale for images")
    if source.video is None:
        raise ValueError(f"{src}: has no video stream")
    settings = ff.encoder_settings(dst, codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, source=source)
    ff.check_output(dst, settings)
    return source, settings


def check_source(src: Path) -> None:
    """Refuse a missing source, a folder and a still image by name (before any work)."""
    if src.is_dir():
        raise IsADirectoryError(f"{src}: is a folder, not a video file (to upscale a folder of images use "
                                "srdeploy upscale)")
    if not src.is_file():
        raise FileNotFoundError(f"{src}: video file does not exist")
    if src.suffix.lower() in IMAGE_EXTS:
        raise ValueError(f"{src}: is a still image, not a video; use srdeploy upscale for images")


@contextmanager
def own_work(dst: Path, *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Own ``dst``'s work folder for the block (``jobs.JobFolder.lock``) and make it ready.

    Refused, before anything is written or removed: a folder another live job holds
    (``JobLocked``, naming it), an output that appeared since the request was checked (a job
    that just finished), an unfinished run's segments without ``resume``. A refused claim of a
    folder that did not exist removes it again.

    Yields:
        The work folder.
    """
    work = work_folder(dst)
    fresh = not work.exists()
    with ExitStack() as stack:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(JobFolder(work, JOB_FILE).lock(str(dst)))
        except PermissionError:
            raise PermissionError(f"{dst}: permission denied: cannot write in {dst.parent}") from None
        try:
            _ready_work(dst, work, resume=resume, overwrite=overwrite)
        except BaseException:
            if fresh:
                shutil.rmtree(work, ignore_errors=True)
            raise
        yield work


def _ready_work(dst: Path, work: Path, *, resume: bool, overwrite: bool) -> None:
    """Checks and clean-up once the folder is owned (see ``own_work``)."""
    if not overwrite and occupied(dst):  # a dangling symlink too
        raise FileExistsError(f"{dst}: output exists; pass --overwrite to replace it")
    leftovers = [p for p in work.iterdir() if p.name != LOCK_FILE]
    if leftovers and not resume:
        if _finished(work):
            raise FileExistsError(f"{dst}: an unfinished run left {len(_finished(work))} finished segment(s) "
                                  f"in {work}; pass --resume to continue it, or delete that folder to start again")
        for p in leftovers:  # only logs of a failed run: nothing to resume
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    drop_partial_segments(work)


def drop_partial_segments(work: Path) -> None:
    """Remove the partial segments a killed run left (``atomic_target``'s hidden temporary names);
    a clean failure removes its own, a SIGKILLed process cannot."""
    for stale in work.glob(".seg-*.tmp*"):
        stale.unlink(missing_ok=True)


def _finished(work: Path) -> list[Path]:
    return [p for p in work.glob("seg-*") if p.suffix in (".mov", ".mp4")]


def _tidy_failed(work: Path, *, keep_logs: bool) -> None:
    """After a failure keep finished segments (and the logs an error message names); else remove the folder."""
    try:
        if work.is_dir() and not _finished(work) and not keep_logs:
            shutil.rmtree(work, ignore_errors=True)
    except OSError:
        pass


def _run_job(upscaler, source: ff.MediaInfo, dst: Path, work: Path, settings: ff.EncoderSettings,
             fingerprint: dict, *, segment_frames: int | None, batch: int, progress: bool, overwrite: bool,
             audio: bool, log: Callable[[str], None]) -> FFmpegVideoStats:
    """Plan (or re-plan on resume), process the unfinished segments, join; the stats of the run."""
    scale = upscaler.session.info.scale
    t_start = time.perf_counter()
    with progress_bar(unit="frame", desc=f"{source.path.name}: probing", enabled=progress) as bar:
        job = plan_job(source, dst, scale, settings, segment_frames=segment_frames, work=work)
        pin_job(job, fingerprint, refusal=f"{dst}: --resume: the unfinished run in {work} was made with",
                hint="rerun it with the same settings, or delete that folder")
        for note in job.notices:
            log(f"note: {note}")
        bar.reset(total=job.frames)
        bar.set_description(source.path.name)
        for warning in job.warnings:
            log(f"warning: {warning}")
        reused, done_frames, seconds = _run_segments(job, upscaler, batch, bar, log)
        bar.set_description(f"{source.path.name}: joining")
        bar.refresh()
        try:
            mux = finish_job(job, audio=audio, overwrite=overwrite)
        except ff.FFmpegError as exc:
            raise ff.FFmpegError(f"{dst}: joining the segments failed: {exc.cause}{exc.log_note}; the "
                                 f"{len(job.tasks)} finished segments are kept in {work} for --resume",
                                 exc.cause, exc.log) from None
    for note in mux.notices:
        log(f"note: {note}")
    audio_state = "none" if not source.audio else "disabled" if not audio else (
        "copied" if all(s.index not in mux.encode and s.index not in mux.dropped for s in source.audio) else "changed")
    return FFmpegVideoStats(frames=job.frames, width=job.times.width * scale, height=job.times.height * scale,
                            source_width=job.times.width, source_height=job.times.height,
                            fps=done_frames / seconds if seconds > 0 else 0.0, seconds=seconds,
                            source_fps=float(job.timing.rate), codec=settings.describe(), audio=audio_state,
                            segments=len(job.tasks), reused=reused, notices=job.notices + mux.notices,
                            warnings=list(job.warnings), total_seconds=time.perf_counter() - t_start)


def _run_segments(job: VideoJob, upscaler, batch: int, bar,
                  log: Callable[[str], None]) -> tuple[int, int, float]:
    """Process every unfinished segment in order: (segments reused, frames processed, seconds).
    A finished segment that fails its checksum is redone, with one line saying so."""
    reused = done_frames = 0
    t0 = time.perf_counter()
    for task in job.tasks:
        problem = segment_problem(task)
        if problem is None:
            reused += 1
            bar.update(task.count)
            continue
        if problem:
            log(f"warning: {job.dst}: segment {task.index} ({task.path.name}) {problem}; redoing it")
        try:
            process_segment(task, upscaler, batch=batch, on_frame=bar.update)
        except ff.FFmpegError as exc:
            finished = sum(1 for t in job.tasks if t.path.is_file())
            raise ff.FFmpegError(f"{job.dst}: segment {task.index} failed: {exc.cause}{exc.log_note}; "
                                 f"{finished} finished segment(s) kept in {job.work} for --resume",
                                 exc.cause, exc.log) from None
        done_frames += task.count
    return reused, done_frames, time.perf_counter() - t0
