"""The ffmpeg layer of ``srdeploy video``: probe, decode, encode, join and mux, as argument lists.

Every ffmpeg run of srdeploy goes through this package, in four rooms:

============ ========================================================================================
``process``  the executable (``ffmpeg_exe``, ``use_ffmpeg`` for ``--ffmpeg``), ``Process`` (argument
             list, stderr to a log file, a tail kept for the one-line error), the BGR24 pipes
             ``FrameDecoder`` and ``FrameEncoder``
``probe``    what a source holds: streams, colour tags, rotation (``probe``); every decoded frame's
             time and the decoded size (``frame_times``); packets in a file (``count_packets``)
``timing``   the output frame rate: exact for constant-rate sources, the mean for variable ones
``codecs``   extension -> container and default codec, ``--codec/--crf/--preset/--pix-fmt`` ->
             ``EncoderSettings``, and ``check_output``, which asks ffmpeg before any work whether
             it can write those settings into that container; ``STREAMS``, what each container
             holds of the source's other streams
``mux``      segments + every other stream of the source -> the output (``join_and_mux``; each
             stream copied, converted or dropped as ``plan_streams`` decides from ``STREAMS``);
             the OpenCV encoder's audio (``add_audio``)
============ ========================================================================================

Colour: decoding converts with the matrix the stream is tagged with (BT.601 when untagged) and
rotation is applied (frames come out upright); encoding converts back with the source's tags,
which are copied onto the output, so an RGB round trip is exact up to rounding.

The names below are the package's interface (``from srdeploy.runtime.media import ffmpeg as ff``).
"""

from __future__ import annotations

from .codecs import (CODECS, CONTAINERS, ENCODER_DEFAULTS, QUALITY, STREAMS, EncoderSettings, Holds, check_output,
                     container_for, encode_fps, encoder_settings, encoders, pixel_formats)
from .mux import MuxPlan, add_audio, concat_list, join_and_mux, plan_streams
from .probe import FrameTimes, MediaInfo, StreamInfo, count_packets, frame_times, probe, with_path
from .process import (FFMPEG_ENV, FFmpegError, FrameDecoder, FrameEncoder, Process, capture, failure_cause,
                      ffmpeg_exe, run, use_ffmpeg)
from .timing import Timing, analyse_timing, vfr_drift

__all__ = ["CODECS", "CONTAINERS", "ENCODER_DEFAULTS", "FFMPEG_ENV", "QUALITY", "STREAMS", "EncoderSettings",
           "FFmpegError", "FrameDecoder", "FrameEncoder", "FrameTimes", "Holds", "MediaInfo", "MuxPlan", "Process",
           "StreamInfo", "Timing", "add_audio", "analyse_timing", "capture", "check_output", "concat_list",
           "container_for", "count_packets", "encode_fps", "encoder_settings", "encoders", "failure_cause",
           "ffmpeg_exe", "frame_times", "join_and_mux", "pixel_formats", "plan_streams", "probe", "run",
           "use_ffmpeg", "vfr_drift", "with_path"]
