"""BatchNorm folding: fused == unfused (eval) on random inputs and real images, with real BN statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from srdeploy.export.fuse import UnfoldableBatchNormError, conv_bn_pairs, fold_conv_bn, fuse_bn, randomize_bn
from srdeploy.train.archs import Discriminator, SRResNet

TOL = 1e-5


def _tiny(scale=4, seed=0):
    torch.manual_seed(seed)
    return randomize_bn(SRResNet(scale=scale, num_blocks=2, channels=16), seed=seed).eval()


def _max_err(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 17, 23), (1, 3, 31, 12)])
def test_fused_equals_unfused_random(scale, shape):
    model = _tiny(scale)
    fused = fuse_bn(model)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    assert _max_err(model, fused, x) <= TOL
    assert fused(x).shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)


def test_fused_equals_unfused_real_images(set5):
    from srdeploy.train.data import degrade, list_images, load_rgb, mod_crop, to_chw_float

    model = _tiny()
    fused = fuse_bn(model)
    for path in list_images(set5)[:3]:
        lr = to_chw_float(degrade(mod_crop(load_rgb(path), 4), 4))[None, :, :48, :40]
        err = _max_err(model, fused, torch.from_numpy(np.ascontiguousarray(lr)))
        assert err <= TOL, f"{path.name}: {err}"


def test_bn_statistics_are_nontrivial_and_folding_does_work():
    model = _tiny()
    bn = model.body[0].bn1
    assert bn.running_var.std() > 0.1 and bn.running_mean.abs().max() > 0.1  # not fresh 0/1 stats
    fused = fuse_bn(model)
    # The folded conv differs from the original: folding really changed the weights.
    assert not torch.allclose(fused.body[0].conv1.weight, model.body[0].conv1.weight)
    # And dropping the BN without folding would be visibly wrong.
    naive = fuse_bn(model)
    naive.body[0].conv1 = model.body[0].conv1
    assert _max_err(model, naive, torch.rand(1, 3, 12, 12)) > 1e-2


def test_caller_model_untouched_and_no_bn_left():
    model = _tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_bn(model)
    assert model.training  # mode untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert not fused.training
    assert type(fused) is SRResNet  # same class and forward; names preserved
    assert {n for n, m in fused.named_modules() if isinstance(m, nn.Conv2d)} == \
        {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_discriminator_bias_free_convs_fold():
    torch.manual_seed(0)
    d = randomize_bn(Discriminator(base_channels=8)).eval()
    fd = fuse_bn(d)
    assert _max_err(d, fd, torch.rand(2, 3, 40, 36)) <= TOL


class _ConvBnShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.bn(self.conv(x)))


def test_conv_bn_pixelshuffle_folds():
    m = randomize_bn(_ConvBnShuffle()).eval()
    f = fuse_bn(m)
    assert conv_bn_pairs(m) == [("conv", "bn")]
    assert _max_err(m, f, torch.rand(1, 4, 9, 7)) <= TOL


class _RegisteredBackwards(nn.Module):
    """BN registered before the conv, but forward applies conv then BN: dataflow decides."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.bn(self.conv(x))


class _BnBeforeConv(nn.Module):
    """Registered conv, bn (registration order suggests conv -> bn) but forward is conv(bn(x))."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x))


class _BnAfterAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.bn(self.act(self.conv(x)))


class _ConvOutputShared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # folding would change the skip branch


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.bn(self.conv(x))
        return x


def test_dataflow_not_registration_order():
    m = randomize_bn(_RegisteredBackwards()).eval()
    f = fuse_bn(m)
    assert _max_err(m, f, torch.rand(1, 3, 10, 10)) <= TOL


@pytest.mark.parametrize("cls, needle", [(_BnBeforeConv, "'bn'"), (_BnAfterAct, "'bn'"),
                                          (_ConvOutputShared, "also used elsewhere"),
                                          (_Untraceable, "torch.fx")])
def test_unfoldable_bn_is_an_error_naming_it(cls, needle):
    m = randomize_bn(cls()).eval()
    with pytest.raises(UnfoldableBatchNormError, match=needle) as info:
        fuse_bn(m)
    if cls is not _Untraceable:
        assert "BatchNorm 'bn'" in str(info.value)


def test_bn_without_running_stats_is_an_error():
    conv, bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(UnfoldableBatchNormError, match="running statistics"):
        fold_conv_bn(conv, bn)
