"""Self-describing checkpoints: rebuild from the file alone, atomic writes, clear errors."""

from __future__ import annotations

import os

import pytest
import torch

from srdeploy.train.archs import SRResNet
from srdeploy.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


def _tiny():
    torch.manual_seed(0)
    kwargs = {"scale": 2, "num_blocks": 1, "channels": 8}
    model = SRResNet(**kwargs)
    for m in model.modules():  # non-trivial BN statistics, so eval mode differs from train mode
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval(), kwargs


def test_rebuild_from_checkpoint_alone_gives_identical_outputs(tmp_path):
    model, kwargs = _tiny()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, arch="SRResNet", kwargs=kwargs, step=7, metrics={"psnr": 30.0})
    ckpt = load_checkpoint(path)
    assert ckpt["arch"] == "SRResNet" and ckpt["kwargs"] == kwargs and ckpt["step"] == 7
    assert ckpt["scale"] == 2 and "torch" in ckpt["versions"]
    rebuilt = model_from_checkpoint(path)
    x = torch.rand(1, 3, 9, 13)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_ema_weights_are_preferred_when_present(tmp_path):
    model, kwargs = _tiny()
    ema = SRResNet(**kwargs).eval()
    save_checkpoint(tmp_path / "m.pt", model, arch="SRResNet", kwargs=kwargs, ema=ema)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model_from_checkpoint(tmp_path / "m.pt")(x), ema(x))
        assert torch.equal(model_from_checkpoint(tmp_path / "m.pt", use_ema=False)(x), model(x))


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    model, kwargs = _tiny()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, arch="SRResNet", kwargs=kwargs, step=1)
    before = path.read_bytes()

    def boom(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, arch="SRResNet", kwargs=kwargs, step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_invalid_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt: checkpoint file does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="junk.pt: not a valid srdeploy checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="bare.pt: not an srdeploy checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_loading_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "srdeploy.checkpoint", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a valid srdeploy checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_mismatched_weights_are_reported(tmp_path):
    model, kwargs = _tiny()
    save_checkpoint(tmp_path / "m.pt", model, arch="SRResNet", kwargs=kwargs)
    ckpt = load_checkpoint(tmp_path / "m.pt")
    ckpt["kwargs"] = {**kwargs, "channels": 16}
    with pytest.raises(ValueError, match="weights do not match"):
        model_from_checkpoint(ckpt)
