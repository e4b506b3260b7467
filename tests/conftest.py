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
    """``--precision auto`` (the default of upscale, video, batch and serve) reads ``srdeploy tune`` profiles
    from the user cache folder: every test gets an empty one, so a profile on the machine running
    the tests never changes what they run (subprocesses inherit the variable)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


@pytest.fixture()
def full_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped with the reason elsewhere), unmounted after the test: the
    full-disk checks of video (test_video_ffmpeg) and the image writers (test_reliability3_misc)."""
    import os
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root (mount -t tmpfs -o size=1m)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture()
def unprivileged():
    """A function giving a command that runs without the right to ignore file permissions: for root,
    under ``setpriv`` without CAP_DAC_OVERRIDE (root writes into a 0555 folder otherwise); skipped
    with the reason where that is not possible. Used by the read-only folder tests."""
    import os
    import shutil

    def wrap(cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: cannot make a folder unwritable")
        return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]

    return wrap
