"""``srdeploy video``: argparse parser; the handler imports OpenCV and the runtime when it runs."""

from __future__ import annotations

import argparse
import sys

from ._args import add_session_args, add_tile_args, check_tile_args, describe_session, session_recipe


def register(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser(
        "video", help="upscale a video (OpenCV decode | inference | encode, pipelined)",
        description="Upscale every frame of a video at the source frame rate. Decoding, inference and "
                    "encoding run concurrently. Audio is copied with ffmpeg where an ffmpeg executable "
                    "exists, else dropped (with a warning). Output goes to a temporary file renamed at "
                    "the end, so an interrupted run leaves nothing under the output name. Colour: OpenCV "
                    "decodes to 8-bit BGR with BT.601 assumptions and writes no colour tags (see "
                    "srdeploy.runtime.media.video).")
    v.add_argument("-i", "--input", required=True, metavar="IN", help="input video")
    v.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output video; the container follows the extension (.mp4, .mkv, .avi, .mov)")
    add_session_args(v)
    add_tile_args(v, tile_help="tile size in LR pixels; auto (default) = the largest tile whose predicted peak memory "
                                 "fits --max-memory (the whole frame when it fits); 0 = whole frame in one pass",
                  batch_help="frames per inference call when a frame fits in one tile, else tiles per call "
                             "(default 1)")
    v.add_argument("--codec", default=None, metavar="FOURCC",
                   help="output FourCC (default by extension: .mp4/.mov mp4v, .mkv FFV1 lossless, .avi MJPG)")
    v.add_argument("--overwrite", action="store_true", help="replace an existing output")
    v.add_argument("--no-audio", action="store_true", help="do not try to copy the audio")
    v.add_argument("--ffmpeg", default=None, metavar="PATH",
                   help="ffmpeg executable for the audio (default: ffmpeg on PATH or $SRDEPLOY_FFMPEG)")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=run_video)


def run_video(args: argparse.Namespace) -> int:
    from ..media.video import upscale_video
    from ..open import open_session
    from ..upscale import Upscaler

    check_tile_args(args)
    kwargs = {} if args.tile is None else {"tile": args.tile}
    recipe = session_recipe(args)
    with open_session(recipe) as session:
        upscaler = Upscaler(session, tile_pad=args.tile_pad, batch=args.batch, max_memory=args.max_memory, **kwargs)
        if upscaler.tile == "auto":  # choose for the frame size, so the first line shows it
            import cv2

            cap = cv2.VideoCapture(args.input)
            w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            cap.release()
            if w > 0 and h > 0:
                upscaler.plan(h, w, streamed=False)
        print(describe_session(session, recipe.model, upscaler), file=sys.stderr)
        stats = upscale_video(upscaler, args.input, args.output, codec=args.codec, batch=args.batch,
                              overwrite=args.overwrite, progress=not args.quiet, audio=not args.no_audio,
                              ffmpeg=args.ffmpeg)
    audio = {"copied": "audio copied", "re-encoded": "audio re-encoded", "none": "no audio in source",
             "dropped": "audio dropped", "disabled": "audio not copied (--no-audio)"}[stats.audio]
    print(f"{args.output}: {stats.frames} frames {stats.width}x{stats.height} at {stats.source_fps:g} fps "
          f"({stats.codec}, {audio}); {stats.fps:.2f} fps end to end in {stats.seconds:.1f} s", file=sys.stderr)
    return 0
