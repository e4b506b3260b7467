"""Video tasks for the batch: plan a video into segments, run one segment, join and mux.

A video is three kinds of task, all run by workers (they see the files; the driver may not):

    video-plan  probe the source, cut it into segments     -> {"frames": N, "segments": [seg, ...]}
    segment     decode, upscale and encode segment k        -> its file in the video's work folder
    join        join the segments, mux the source's other streams -> the output, atomically

A segment ``seg`` is a small picklable value; it names its own output file, so running it again
after a crash either finds the finished file (and returns at once) or redoes it.
"""

from __future__ import annotations

UNAVAILABLE = ("batch: videos need the ffmpeg segment layer (srdeploy.runtime.media.segments: process segment k, "
               "join and mux), which this build does not have; upscale videos one by one with `srdeploy video`")


def unavailable_reason() -> str | None:
    """None when video tasks can run here, else the one-line reason."""
    try:
        from ..media import segments  # noqa: F401
    except ImportError:
        return UNAVAILABLE
    return UNAVAILABLE  # wired in phase 2
