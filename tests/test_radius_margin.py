"""The two per-model measurements export makes: the receptive radius probe grows past what the
convolutions say, and the tile margin is the smallest one below the threshold, on models whose
answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


class PooledNet(torch.nn.Module):
    """A 3x3 conv after a 31x31 average pool: the pool mixes 15 pixels each way, which no
    convolution's kernel shows, so the probe must grow past its first size. Radius 15 + 1."""

    def __init__(self):
        super().__init__()
        self.scale, self.in_channels = 2, 3
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(torch.nn.functional.avg_pool2d(x, 31, stride=1, padding=15)))


def test_probe_grows_until_the_dependency_stays_inside():
    from srdeploy.train.radius import conv_bound, measure_radius

    torch.manual_seed(0)
    model = PooledNet().eval()
    assert conv_bound(model, channels=3) == 3  # the conv alone (1) + 2: far too small
    r = measure_radius(model)
    assert (r.radius, r.method) == (16, "probe") and r.size > 2 * 16 + 1


def test_probe_that_cannot_contain_the_dependency_says_so():
    from srdeploy.train.radius import measure_radius

    r = measure_radius(PooledNet().eval(), limit=24)
    assert r.method == "limit" and r.radius >= 12


class Decay:
    """A scale-1 "model" whose output at a pixel is the input plus rings of neighbours weighted
    10**-(d + 0.5) at Chebyshev distance d <= 5 (zero outside the input): a tile margin m leaves out
    the rings beyond m at a seam, so the deviation falls about tenfold per pixel of margin."""

    def __init__(self):
        from srdeploy.runtime.metadata import ModelInfo
        from srdeploy.runtime.session import InputSpec

        self.info = ModelInfo(scale=1, receptive_radius=5)
        self.input_spec = InputSpec()

    def infer(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        p = np.pad(x, ((0, 0), (0, 0), (5, 5), (5, 5)))
        y = np.zeros_like(x)
        for dy in range(-5, 6):
            for dx in range(-5, 6):
                d = max(abs(dy), abs(dx))
                y += (10.0 ** -(d + 0.5) if d else 1.0) * p[:, :, 5 + dy:5 + dy + h, 5 + dx:5 + dx + w]
        return y.astype(np.float32)


def test_margin_is_the_smallest_below_the_threshold():
    from srdeploy.export.margin import THRESHOLD, measure_margin
    from srdeploy.runtime.tiling import tiled_infer

    sess = Decay()
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, 3, 60, 70), dtype=np.float32), rng.random((1, 3, 50, 50), dtype=np.float32)]
    result = measure_margin(sess, inputs, ["a", "b"], radius=5)
    # the same curve, by hand: tiled (tile at most a third of a side) against whole, per margin
    for m, dev in result.curve:
        worst = max(float(np.abs(tiled_infer(sess, x[0], tile=min(32, min(x.shape[2:]) // 3), tile_pad=m)
                                 - sess.infer(x)[0]).max()) for x in inputs)
        assert dev == pytest.approx(worst * 255, rel=1e-6)
    devs = dict(result.curve)
    assert devs[result.margin] < THRESHOLD * 255 and all(v >= THRESHOLD * 255 for m, v in result.curve
                                                         if m < result.margin)
    # margin 2 misses the threshold by less than tenfold (a looser threshold would stop there); 4 meets it
    assert 0.5 < devs[2] < 5 and result.margin == 4
    assert result.lines()[-1].startswith("  margin    4:") and "the default --tile-pad" in result.lines()[-1]


class GlobalMean(Decay):
    """Output = input + the whole input's mean (context from everywhere, radius "20"): on a ramp every
    tiled run deviates, until the window holds the whole image and the deviation is zero."""

    def infer(self, x: np.ndarray) -> np.ndarray:
        return (x + x.mean(axis=(2, 3), keepdims=True)).astype(np.float32)


def test_a_margin_where_no_seam_is_left_is_not_taken_as_measured():
    from srdeploy.export.margin import measure_margin

    ramp = np.linspace(0, 1, 36, dtype=np.float32)[None, None, None, :] * np.ones((1, 3, 30, 1), np.float32)
    inputs = [ramp]
    lines = []
    result = measure_margin(GlobalMean(), inputs, ["a"], radius=20, log=lines.append)
    # tile 10: the margins whose window leaves a seam on some axis are measured (all deviate); the first
    # whose window covers the whole 30x36 image would show 0 and is not taken
    from srdeploy.export.margin import margins_up_to
    from srdeploy.runtime.tiling import axis_window

    seams = [m for m in margins_up_to(20) if axis_window(30, 10, m)[0] < 30 or axis_window(36, 10, m)[0] < 36]
    assert [m for m, _ in result.curve] == seams == [0, 2, 4, 6, 8, 10, 12]
    assert all(v > 0.5 for _, v in result.curve)
    assert result.margin == 20  # the radius (exact), not the 0 that an untiled run would show
    assert "no seam is left to measure" in lines[-1] and "--margin-images" in lines[-1]
