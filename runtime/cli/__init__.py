"""Runtime subcommands: ``upscale``, ``video``, ``bench``, ``batch``, ``serve`` and ``tune`` (one module each;
shared flags in ``_args``).

Parsers only: no onnxruntime, OpenCV or torch import until a command runs.
"""

from __future__ import annotations

import argparse

# The shared flags and ``settings_from_args``, for the other packages' CLI modules (export, the
# top-level cli), which must not reach into the private ``_args``.
from ._args import (PRECISIONS, add_session_args, add_tile_args, backend_arg,  # noqa: F401
                    settings_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    from . import batch, bench, serve, tune, upscale, video

    upscale.register(sub)
    video.register(sub)
    bench.register(sub)
    batch.register(sub)
    serve.register(sub)
    tune.register(sub)
