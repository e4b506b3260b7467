"""``srdeploy export``, ``verify``, ``build-engine`` parsers (filled in by the export issue)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
