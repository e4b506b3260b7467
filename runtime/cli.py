"""``srdeploy upscale``, ``video``, ``bench`` parsers (filled in by the runtime issues)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
