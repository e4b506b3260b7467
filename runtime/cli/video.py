"""``srdeploy video``: argparse parser; the handler imports OpenCV, ffmpeg and the runtime when it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._args import add_session_args, add_tile_args, settings_from_args

ENCODERS = ("ffmpeg", "opencv")


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "video", help="upscale a video (ffmpeg H.264/HEVC/AV1/FFV1, every stream kept, resumable)",
        description="Upscale every frame of a video. Frames are decoded and encoded by the bundled ffmpeg "
                    "(imageio-ffmpeg) through pipes, in segments of --segment-frames frames kept in a hidden "
                    "folder beside the output, so --resume continues an interrupted run; the segments are then "
                    "joined without re-encoding and every other stream of the source (audio tracks, subtitles, "
                    "chapters, attachments, metadata) is copied in. Defaults by container: .mp4/.m4v/.mov/.mkv/"
                    ".avi/.flv/.ts H.264 yuv420p CRF 18 preset medium, .webm AV1 (SVT-AV1) CRF 30, .mpg MPEG-2, "
                    ".wmv WMV 8. Output settings are checked with ffmpeg before the model loads. Output goes to a "
                    "temporary file renamed at the end, so a failure leaves nothing under the output name. "
                    "--encoder opencv uses OpenCV's VideoWriter instead (FourCC codecs, audio only).")
    v.add_argument("-i", "--input", required=True, metavar="IN", help="input video")
    v.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output video; the container follows the extension (.mp4, .m4v, .mov, .mkv, .webm, .avi, "
                        ".flv, .ts, .mts, .m2ts, .mpg, .mpeg, .wmv)")
    add_session_args(v, precision="auto")
    add_tile_args(v, tile_help="tile size in LR pixels; auto (default) = the largest tile whose predicted peak memory "
                                 "fits --max-memory (the whole frame when it fits); 0 = whole frame in one pass",
                  batch_help="frames per inference call when a frame fits in one tile, else tiles per call "
                             "(default 1)")
    v.add_argument("--encoder", choices=ENCODERS, default="ffmpeg",
                   help="ffmpeg (default: bundled ffmpeg, all streams, segments) or opencv (VideoWriter)")
    v.add_argument("--codec", default=None, metavar="CODEC",
                   help="ffmpeg: h264, hevc, av1, ffv1 (lossless), mpeg2, mpeg4, wmv or any ffmpeg encoder name "
                        "(libx264rgb, h264_nvenc...); default by extension (H.264; AV1 for .webm, MPEG-2 for .mpg, "
                        "WMV 8 for .wmv). opencv: a FourCC (default .mp4/.mov mp4v, .mkv FFV1, .avi MJPG)")
    v.add_argument("--crf", type=int, default=None, metavar="N",
                   help="quality, lower = better (default: H.264 18, HEVC 20, AV1 30; 0 = lossless for H.264; "
                        "MPEG-2/MPEG-4/WMV: -q:v 1-31, default 3)")
    v.add_argument("--preset", default=None, metavar="P",
                   help="encoder speed preset (x264/x265: ultrafast..veryslow, default medium; SVT-AV1: 0-13, "
                        "default 8)")
    v.add_argument("--pix-fmt", default=None, metavar="FMT",
                   help="output pixel format (default yuv420p; yuv420p10le for 10-bit, yuv444p, bgr0 for FFV1)")
    v.add_argument("--segment-frames", type=int, default=None, metavar="N",
                   help="frames per segment (default: about 10 s of video)")
    v.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its first unfinished segment (same settings)")
    v.add_argument("--overwrite", action="store_true", help="replace an existing output")
    v.add_argument("--no-audio", action="store_true", help="leave the audio tracks out")
    v.add_argument("--ffmpeg", default=None, metavar="PATH",
                   help="ffmpeg executable, a path or a name on PATH (default: $SRDEPLOY_FFMPEG, else the one "
                        "bundled by imageio-ffmpeg)")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=run_video)


def run_video(args: argparse.Namespace) -> int:
    from ..jobs import model_fingerprint
    from ..media import segments
    from ..open import describe_session, open_session
    from ..upscale import Upscaler

    run = settings_from_args(args)
    ffmpeg_only = [flag for flag, value in (("--crf", args.crf), ("--preset", args.preset),
                                            ("--pix-fmt", args.pix_fmt), ("--segment-frames", args.segment_frames),
                                            ("--resume", args.resume)) if value not in (None, False)]
    if args.encoder == "opencv" and ffmpeg_only:
        raise ValueError(f"{', '.join(ffmpeg_only)}: only with --encoder ffmpeg (the default)")
    if args.ffmpeg:
        from ..media.ffmpeg import use_ffmpeg

        use_ffmpeg(args.ffmpeg)  # the one way it travels: $SRDEPLOY_FFMPEG, for this process and its children
    w, h = _check_request(args)  # source, output name and output settings: before the model loads
    recipe = run.recipe
    with open_session(recipe) as session:
        upscaler = Upscaler(session, run.tiling)
        if upscaler.settings.auto and w > 0 and h > 0:  # choose for the frame size, so the first line shows it
            upscaler.plan(h, w, streamed=False)
        print(describe_session(session, recipe.model, upscaler), file=sys.stderr)
        if args.encoder == "opencv":
            return _opencv(args, upscaler)
        stats = segments.upscale_video_ffmpeg(
            upscaler, args.input, args.output, codec=args.codec, crf=args.crf, preset=args.preset,
            pix_fmt=args.pix_fmt, segment_frames=args.segment_frames, resume=args.resume, overwrite=args.overwrite,
            batch=upscaler.batch, progress=not args.quiet, audio=not args.no_audio,
            fingerprint=model_fingerprint(upscaler, recipe.model))
    audio = {"none": "no audio in source", "copied": "all audio copied", "disabled": "audio left out (--no-audio)",
             "changed": "audio converted or dropped, see notes"}[stats.audio]
    reused = f", reused {stats.reused} of {stats.segments} segments" if stats.reused else ""
    print(f"{args.output}: {stats.frames} frames {stats.width}x{stats.height} at {stats.source_fps:g} fps "
          f"({stats.codec}, {audio}{reused}); {stats.fps:.2f} fps end to end in {stats.seconds:.1f} s",
          file=sys.stderr)
    return 0


def _check_request(args: argparse.Namespace) -> tuple[int, int]:
    """Refuse a bad source, output name or output setting in one line, before a model is opened.

    Returns:
        The source's frame size (0, 0 when unknown), read by ffmpeg's probe: OpenCV's own AVI
        reader, which a plain ``cv2.VideoCapture`` falls back to, prints a damaged header's bytes
        to stderr.
    """
    from ..media import ffmpeg as ff
    from ..media import segments, video

    src, dst = Path(args.input), Path(args.output)
    if args.encoder == "opencv":
        segments.check_source(src)  # a folder or a still image by name
        video.check_request(src, dst, args.codec, batch=args.batch, overwrite=args.overwrite)
        try:
            return ff.probe(src).frame_size
        except (ValueError, OSError, RuntimeError):  # OpenCV's decoder says why when it opens the file
            return 0, 0
    source, _ = segments.check_request(src, dst, codec=args.codec, crf=args.crf, preset=args.preset,
                                       pix_fmt=args.pix_fmt, segment_frames=args.segment_frames, batch=args.batch,
                                       overwrite=args.overwrite)
    return source.frame_size


def _opencv(args: argparse.Namespace, upscaler) -> int:
    from ..media.video import upscale_video

    stats = upscale_video(upscaler, args.input, args.output, codec=args.codec, batch=upscaler.batch,
                          overwrite=args.overwrite, progress=not args.quiet, audio=not args.no_audio)
    audio = {"copied": "audio copied", "re-encoded": "audio re-encoded", "none": "no audio in source",
             "dropped": "audio dropped", "disabled": "audio not copied (--no-audio)"}[stats.audio]
    print(f"{args.output}: {stats.frames} frames {stats.width}x{stats.height} at {stats.source_fps:g} fps "
          f"({stats.codec}, {audio}); {stats.fps:.2f} fps end to end in {stats.seconds:.1f} s", file=sys.stderr)
    return 0
