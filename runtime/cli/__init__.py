"""Runtime subcommands: ``upscale``, ``video``, ``bench`` and ``batch`` (one module each; shared flags in ``_args``).

Parsers only: no onnxruntime, OpenCV or torch import until a command runs.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from . import batch, bench, serve, upscale, video

    upscale.register(sub)
    video.register(sub)
    bench.register(sub)
    batch.register(sub)
    serve.register(sub)
