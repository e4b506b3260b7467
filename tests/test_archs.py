"""Architecture shapes, parameter counts, receptive radius and the VGG weight contract."""

from __future__ import annotations

import pytest
import torch

from srdeploy.train.archs import (ARCHS, Discriminator, SRResNet, VGGFeatures, build_model,
                                  receptive_radius)


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("size", [(7, 11), (16, 16), (1, 5)])
def test_generator_output_shape(scale, size):
    model = SRResNet(scale=scale, num_blocks=2, channels=8).eval()
    with torch.no_grad():
        y = model(torch.rand(2, 3, *size))
    assert y.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert y.min() >= 0 and y.max() <= 1  # eval output is clamped to the [0, 1] contract


def test_default_parameter_count_matches_paper():
    n = sum(p.numel() for p in SRResNet().parameters())
    # Paper's SRResNet (16 blocks, 64 channels, 4x) has about 1.55 M parameters.
    assert 1.50e6 < n < 1.60e6, n


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="scale must be 2, 4 or 8"):
        SRResNet(scale=3)
    with pytest.raises(ValueError, match="output_range"):
        SRResNet(output_range="sigmoid")
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("EDSR")


def test_registry_rebuilds_from_name_and_kwargs():
    assert ARCHS["SRResNet"] is SRResNet
    m = build_model("SRResNet", scale=2, num_blocks=1, channels=4)
    assert isinstance(m, SRResNet) and m.scale == 2


def test_discriminator_accepts_any_size_and_returns_logits():
    d = Discriminator(base_channels=8).eval()
    for size in (96, 40):
        out = d(torch.rand(3, 3, size, size))
        assert out.shape == (3,)
    # logits (no sigmoid): BCEWithLogitsLoss works and values are not confined to [0, 1]
    loss = torch.nn.BCEWithLogitsLoss()(out, torch.ones(3))
    assert torch.isfinite(loss)
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    bns = [m for m in d.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 7  # BN on every conv but the first


@pytest.mark.parametrize("num_blocks,scale", [(1, 2), (2, 4), (1, 8)])
def test_receptive_radius_matches_autograd(num_blocks, scale):
    """The radius bounds the input pixels that reach an output pixel, and is tight."""
    torch.manual_seed(0)
    model = SRResNet(scale=scale, num_blocks=num_blocks, channels=4, output_range="none").eval()
    radius = receptive_radius(model)
    size = 2 * radius + 9
    x = torch.rand(1, 3, size, size, requires_grad=True)
    centre = size // 2
    # Check every sub-pixel phase of the centre LR pixel.
    reach = 0
    for dy in range(scale):
        for dx in range(scale):
            x.grad = None
            model(x)[0, :, centre * scale + dy, centre * scale + dx].sum().backward()
            nz = (x.grad[0].abs().sum(0) > 0).nonzero()
            reach = max(reach, int((nz - centre).abs().max()))
    assert reach <= radius
    assert reach >= radius - 1  # tight: no large overestimate that would waste tile margin


def test_default_receptive_radius():
    assert receptive_radius(SRResNet()) == 40


def test_vgg_features_random_weights_for_tests_only():
    # Tests build VGG with random weights on purpose: pretrained weights cannot be downloaded here.
    vgg = VGGFeatures(layer="relu2_2", weights="random")
    y = vgg(torch.rand(1, 3, 32, 32))
    assert y.shape == (1, 128, 16, 16)
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training  # frozen: stays in eval mode
    assert len(VGGFeatures(weights="random").features) == 36  # up to relu5_4 (phi_5,4)


def test_vgg_missing_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--vgg-weights"):
        VGGFeatures()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VGGFeatures(weights=tmp_path / "nope.pth")


def test_vgg_loads_weights_from_file(tmp_path):
    from torchvision.models import vgg19

    state = vgg19(weights=None).state_dict()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = VGGFeatures(layer="relu2_2", weights=path)
    assert torch.equal(vgg.features[0].weight, state["features.0.weight"])
