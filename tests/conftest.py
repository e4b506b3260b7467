"""Shared fixtures: the real image data (../shared/data by default, SRDEPLOY_DATA to move it)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root() -> Path:
    from srdeploy.train.data import data_root as root

    path = root()
    if not (path / "benchmark" / "Set5").is_dir():
        pytest.fail(f"test data not found at {path}: set SRDEPLOY_DATA to the folder holding benchmark/Set5")
    return path


@pytest.fixture(scope="session")
def set5(data_root: Path) -> Path:
    return data_root / "benchmark" / "Set5"


@pytest.fixture(scope="session")
def set14(data_root: Path) -> Path:
    return data_root / "benchmark" / "Set14"
