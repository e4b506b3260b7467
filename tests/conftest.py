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


@pytest.fixture(scope="session")
def tiny_srresnet_x2(tmp_path_factory) -> Path:
    """A 2-block, 16-channel SRResNet x2 (seed 0, BN folded) as an srdeploy ONNX file: exported once
    per test session and shared by the runtime, memory and batch tests (``bare.onnx`` beside it has
    no metadata)."""
    import torch

    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet, receptive_radius

    torch.manual_seed(0)
    m = SRResNet(scale=2, num_blocks=2, channels=16).eval()
    d = tmp_path_factory.mktemp("tiny_srresnet_x2")
    export_onnx(fuse_bn(m), d / "bare.onnx")  # beside it: the same model without srdeploy metadata
    (d / "tiny.onnx").write_bytes((d / "bare.onnx").read_bytes())
    add_metadata(d / "tiny.onnx", ModelInfo(scale=2, receptive_radius=receptive_radius(m), arch="SRResNet"))
    return d / "tiny.onnx"


@pytest.fixture(autouse=True)
def _no_user_tune_profiles(tmp_path_factory, monkeypatch):
    """``--precision auto`` (the default of upscale, video and batch) reads ``srdeploy tune`` profiles
    from the user cache folder: every test gets an empty one, so a profile on the machine running
    the tests never changes what they run (subprocesses inherit the variable)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))
