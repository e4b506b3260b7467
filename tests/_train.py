"""Shared by the training tests (``test_train.py``, ``test_train_schedule.py``): tiny models on small
real crops, CPU only. Models: SRResNet(num_blocks=1, channels=8), discriminator base 8, HR crops 16x16
(LR 4x4), batch 2, a handful of steps. Images: 64x64 / 48x48 crops of Set5 written to a temp folder.

The fixtures are imported by each test module (pytest finds fixtures in a module's namespace), so
each module keeps its own module-scoped copies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srdeploy.train.archs import SRResNet
from srdeploy.train.checkpoint import save_checkpoint
from srdeploy.train.config import TrainConfig
from srdeploy.train.data import load_rgb
from srdeploy.train.trainer import train_srresnet

TINY = {"scale": 4, "num_blocks": 1, "channels": 8}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The CI box has 2 cores shared with other jobs: several OpenMP threads per process
    # spin against each other and make these tiny steps ~20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory, set5: Path) -> dict:
    """Small real images: train/ (three 64x64 crops of Set5), val/ (two 48x48 crops)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for i, name in enumerate(["baby", "bird", "butterfly"]):
        img = load_rgb(set5 / f"{name}.png")
        Image.fromarray(img[40:104, 40:104]).save(root / "train" / f"{name}.png")
        if i < 2:
            Image.fromarray(img[100:148, 100:148]).save(root / "val" / f"{name}.png")
    return {"train": str(root / "train"), "val": str(root / "val")}


def tiny_cfg(images: dict, out: Path, **overrides) -> TrainConfig:
    values = dict(data=[images["train"]], val=[images["val"]], out=str(out), num_blocks=1, channels=8,
                  crop=16, batch_size=2, iters=6, lr=1e-3, val_every=3, save_every=3, log_every=1,
                  device="cpu", tensorboard=False, d_channels=8, vgg_layer="relu2_2")
    values.update(overrides)
    return TrainConfig(**values)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    import csv

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def state_equal(a: dict, b: dict) -> bool:
    """Nested state (state dicts, optimizer states) equal bitwise."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def srresnet_run(images, tmp_path_factory) -> Path:
    """One finished tiny SRResNet run with EMA (shared by the tests that only read it)."""
    out = tmp_path_factory.mktemp("runs") / "srresnet"
    train_srresnet(tiny_cfg(images, out, ema=0.5))
    return out


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory) -> Path:
    """A tiny SRResNet checkpoint to start SRGAN from."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("init") / "init.pt"
    save_checkpoint(path, SRResNet(**TINY), arch="SRResNet", kwargs=TINY)
    return path
