"""Runtime subcommands: ``upscale`` (cli_upscale), ``video`` and ``bench`` (cli_bench).

Parsers only: no onnxruntime, OpenCV or torch import until a command runs.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from .cli_upscale import register as register_upscale
    from .cli_bench import register as register_bench

    register_upscale(sub)
    register_bench(sub)
