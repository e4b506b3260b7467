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


# --- issue 11 item 4: every bad checkpoint is one ValueError line naming the file -----------------
def _one_line_naming(exc_info, path) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and str(path) in message, message
    assert "weights_only" not in message and "Re-running" not in message, message  # torch's unsafe advice
    assert exc_info.value.__cause__ is None or not isinstance(exc_info.value.__cause__, RuntimeError)
    return message


def test_checkpoint_of_another_architecture_is_refused_for_upscaling(tmp_path):
    from srdeploy.train.archs import Discriminator
    from srdeploy.train.checkpoint import load_generator

    path = tmp_path / "disc.pt"
    save_checkpoint(path, Discriminator(base_channels=8), arch="Discriminator", kwargs={"base_channels": 8})
    with pytest.raises(ValueError) as info:
        load_generator(path)
    assert "holds a Discriminator, not an SR generator" in _one_line_naming(info, path)
    assert "last.pt or best.pt" in str(info.value)
    # A generator checkpoint loads.
    model, kwargs = _tiny()
    save_checkpoint(tmp_path / "g.pt", model, arch="SRResNet", kwargs=kwargs)
    g, ckpt = load_generator(tmp_path / "g.pt")
    assert isinstance(g, SRResNet) and ckpt["kwargs"] == kwargs


@pytest.mark.parametrize("kwargs, needle", [
    ({"scale": 2, "num_blocks": 1, "channels": 8, "colour": "blue"}, "kwargs ['colour'] are not arguments of SRResNet"),
    ([2, 1, 8], "'kwargs' must be a mapping"),
    ("scale=2", "'kwargs' must be a mapping"),
])
def test_bad_kwargs_are_one_line_naming_the_file(tmp_path, kwargs, needle):
    from srdeploy.train.checkpoint import FORMAT, load_generator

    model, _ = _tiny()
    path = tmp_path / "edited.pt"
    torch.save({"format": FORMAT, "format_version": 1, "arch": "SRResNet", "kwargs": kwargs,
                "state_dict": model.state_dict()}, path)
    for load in (load_checkpoint, load_generator, model_from_checkpoint):
        with pytest.raises(ValueError) as info:
            load(path)
        assert needle in _one_line_naming(info, path)


def test_weights_of_the_wrong_shape_are_one_line_naming_the_file(tmp_path):
    from srdeploy.train.checkpoint import load_generator

    model, kwargs = _tiny()
    path = tmp_path / "m.pt"
    # kwargs that disagree with the weights' own shapes: refused before anything is built
    save_checkpoint(path, model, arch="SRResNet", kwargs={**kwargs, "channels": 16})  # 8-channel weights
    with pytest.raises(ValueError) as info:
        load_generator(path)
    message = _one_line_naming(info, path)
    assert "weights do not match SRResNet" in message
    assert "the kwargs say channels=16 but the weights' shapes say channels=8" in message
    # The same through a dict with its source named (export / torch backend path).
    with pytest.raises(ValueError, match=r"m\.pt: weights do not match"):
        model_from_checkpoint(load_checkpoint(path), source=path)
    save_checkpoint(path, model, arch="SRResNet", kwargs={**kwargs, "scale": 3})
    with pytest.raises(ValueError) as info:
        load_generator(path)
    assert "the kwargs say scale=3 but the weights' shapes say scale=2" in _one_line_naming(info, path)
    # kwargs that fit but one tensor damaged: load_state_dict's mismatch, in one line
    state = model.state_dict()
    state["body.0.conv2.weight"] = state["body.0.conv2.weight"][:, :4]
    torch.save({"format": "srdeploy.checkpoint", "format_version": 1, "arch": "SRResNet", "kwargs": kwargs,
                "state_dict": state}, path)
    with pytest.raises(ValueError) as info:
        load_generator(path)
    message = _one_line_naming(info, path)
    assert "of the wrong shape" in message and "body.0.conv2.weight (8, 4, 3, 3) where the model has (8, 8, 3, 3)" \
        in message


@pytest.mark.parametrize("arch, kwargs", [("SRResNet", {"scale": 2, "num_blocks": 10 ** 9, "channels": 8}),
                                          ("SRResNet", {"scale": 2, "num_blocks": 1, "channels": 10 ** 6}),
                                          ("Discriminator", {"base_channels": 10 ** 6})])
def test_hostile_kwargs_are_refused_before_anything_is_built(tmp_path, arch, kwargs):
    """A checkpoint whose kwargs ask for a huge model (issue 25 item 5: num_blocks=10**9 reached 15 GB
    before the OOM killer) is checked against its weights' shapes first: refused in well under a
    second, without allocating."""
    import resource
    import time

    from srdeploy.train.archs import Discriminator

    model = _tiny()[0] if arch == "SRResNet" else Discriminator(base_channels=8)
    path = tmp_path / "hostile.pt"
    torch.save({"format": "srdeploy.checkpoint", "format_version": 1, "arch": arch, "kwargs": kwargs,
                "state_dict": model.state_dict()}, path)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as info:
        model_from_checkpoint(path)
    assert time.perf_counter() - t0 < 0.5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 100 * 1024  # KiB: < 100 MB more
    assert "weights do not match" in _one_line_naming(info, path)


def test_unloadable_files_never_show_torchs_unsafe_advice(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("hello, not weights\n")
    for name, needle in (("evil.pt", "posix.system"), ("empty.pt", "empty (0 bytes)"), ("text.pt", "torch.load failed")):
        with pytest.raises(ValueError) as info:
            load_checkpoint(tmp_path / name)
        assert needle in _one_line_naming(info, tmp_path / name)


@pytest.mark.parametrize("content", [b"", b"not weights at all\n", "pickle"])
def test_vgg_weights_that_are_not_weights_are_one_line(tmp_path, content):
    """`train srgan --vgg-weights FILE` with a zero-byte or non-weights file (issue 11 item 4)."""
    from srdeploy.train.archs import VGGFeatures

    path = tmp_path / "vgg19.pth"
    if content == "pickle":
        torch.save({"features.0.weight": "not a tensor"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        VGGFeatures(layer="relu1_2", weights=path)
    assert "VGG19 weights" in _one_line_naming(info, path)
    # Wrong shapes too.
    torch.save({"0.weight": torch.zeros(4, 3, 3, 3), "0.bias": torch.zeros(4)}, path)
    with pytest.raises(ValueError) as info:
        VGGFeatures(layer="relu1_2", weights=path)
    assert "shapes differ" in _one_line_naming(info, path)
