"""Tiling: tiled == whole image with margin >= receptive radius, on a tiny real ONNX model."""

from __future__ import annotations

import numpy as np
import pytest

from srdeploy.runtime.session import InputSpec, Session
from srdeploy.runtime.tiling import plan_tiles, tiled_infer


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    import torch

    from srdeploy.export.fuse import fuse_bn
    from srdeploy.export.onnx_export import add_metadata, export_onnx
    from srdeploy.runtime.metadata import ModelInfo
    from srdeploy.train.archs import SRResNet, receptive_radius

    torch.manual_seed(0)
    model = SRResNet(num_blocks=2, channels=16, scale=4)
    # Non-trivial BN statistics so the folded model is not the identity-BN special case.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("tiling") / "tiny.onnx"
    export_onnx(fuse_bn(model.eval()), path)
    add_metadata(path, ModelInfo(scale=4, receptive_radius=receptive_radius(model), arch="SRResNet"))
    return path


@pytest.fixture(scope="module")
def session(onnx_model):
    from srdeploy.runtime.open import open_session

    with open_session(onnx_model, threads=1) as s:
        yield s


class Constrained(Session):
    """A real session behind an engine-like shape profile (what a TensorRT engine imposes)."""

    def __init__(self, inner: Session, spec: InputSpec) -> None:
        super().__init__()
        self.inner, self.info, self.input_spec = inner, inner.info, spec
        self.shapes: list[tuple[int, ...]] = []

    def _infer(self, x):
        self.shapes.append(x.shape)
        return self.inner.infer(x)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).random((3, h, w), dtype=np.float32)


def test_radius_is_what_tiny_model_needs(session):
    # 9x9 head (4) + 2 blocks (4) + body conv (1) + upsampling/tail back-projected (3) = 12
    assert session.info.receptive_radius == 12


@pytest.mark.parametrize("tile", [7, 16, 23, 40])
def test_tiled_equals_whole_odd_image(session, tile):
    x = _image(37, 53)
    whole = session.infer(x[None])[0]
    y = tiled_infer(session, x, tile=tile, tile_pad=session.info.receptive_radius)
    assert y.shape == (3, 37 * 4, 53 * 4)
    assert np.abs(y - whole).max() <= 1e-5


def test_margin_below_radius_is_not_exact(session):
    """Guards the test above: with too small a margin the seams do show, so equality is earned."""
    x = _image(37, 53)
    whole = session.infer(x[None])[0]
    y = tiled_infer(session, x, tile=8, tile_pad=2)
    assert np.abs(y - whole).max() > 1e-3


def test_image_smaller_than_tile_and_tile_zero(session):
    x = _image(9, 11, seed=1)
    whole = session.infer(x[None])[0]
    assert np.abs(tiled_infer(session, x, tile=64) - whole).max() <= 1e-5
    assert np.abs(tiled_infer(session, x, tile=0) - whole).max() <= 1e-5
    plan = plan_tiles(9, 11, tile=64, tile_pad=12)
    assert plan.num_tiles == 1 and plan.window == (9, 11)


@pytest.mark.parametrize("shape", [(1, 9), (9, 1), (1, 1)])
def test_one_pixel_wide(session, shape):
    x = _image(*shape, seed=2)
    whole = session.infer(x[None])[0]
    y = tiled_infer(session, x, tile=4, tile_pad=12)
    assert y.shape == (3, shape[0] * 4, shape[1] * 4)
    assert np.abs(y - whole).max() <= 1e-5


def test_batch_of_tiles_equals_one_by_one(session):
    x = _image(30, 41, seed=3)
    one = tiled_infer(session, x, tile=10, tile_pad=5, batch=1)
    for b in (2, 3, 64):
        many = tiled_infer(session, x, tile=10, tile_pad=5, batch=b)
        assert np.abs(many - one).max() <= 1e-5


def test_feather_exact_with_full_margin_and_softens_seams(session):
    x = _image(30, 41, seed=4)
    whole = session.infer(x[None])[0]
    r = session.info.receptive_radius
    assert np.abs(tiled_infer(session, x, tile=10, tile_pad=r, feather=3) - whole).max() <= 1e-5
    hard = np.abs(tiled_infer(session, x, tile=10, tile_pad=4) - whole).max()
    soft = np.abs(tiled_infer(session, x, tile=10, tile_pad=4, feather=4) - whole).max()
    assert soft < hard
    with pytest.raises(ValueError, match="feather"):
        tiled_infer(session, x, tile=10, tile_pad=2, feather=3)


def test_tiles_fit_engine_profile(session):
    """Tile windows are clamped to the profile; tiles stay exact; small images are padded up."""
    spec = InputSpec(batch=(1, 2), height=(16, 40), width=(16, 40))
    c = Constrained(session, spec)
    x = _image(45, 70, seed=5)
    whole = session.infer(x[None])[0]
    y = tiled_infer(c, x, tile=128, tile_pad=12, batch=4)
    assert np.abs(y - whole).max() <= 1e-5
    assert c.shapes and all(1 <= n <= 2 and 16 <= h <= 40 and 16 <= w <= 40 for n, _, h, w in c.shapes)
    plan = plan_tiles(45, 70, tile=128, tile_pad=12, batch=4, spec=spec)
    assert any("reduced" in n for n in plan.notes)
    # smaller than the profile minimum: edge-padded, output cropped back to 4x the input
    c.shapes.clear()
    small = _image(5, 7, seed=6)
    y = tiled_infer(c, small, tile=0, tile_pad=12)
    assert y.shape == (3, 20, 28) and c.shapes == [(1, 3, 16, 16)]
    assert np.isfinite(y).all()
    # Edge padding changes only the pixels that see it: with a profile minimum of 32, a 30x31 image
    # is padded by 2 rows and 1 column at the bottom/right, so every output pixel whose receptive
    # field (radius 12) stays inside the image is exactly the unpadded result.
    c32 = Constrained(session, InputSpec(batch=(1, 2), height=(32, 64), width=(32, 64)))
    img = _image(30, 31, seed=8)
    y = tiled_infer(c32, img, tile=0, tile_pad=12)
    ref = session.infer(img[None])[0]
    assert y.shape == ref.shape == (3, 120, 124) and c32.shapes == [(1, 3, 32, 32)]
    inner = (slice(None), slice(0, (30 - 12) * 4), slice(0, (31 - 12) * 4))
    assert np.abs(ref[inner]).max() > 0.05 and (ref[inner] > 0).mean() > 0.2  # not a blank reference
    assert np.abs(y[inner] - ref[inner]).max() <= 1e-5
    assert np.abs(y - ref).max() > 1e-5  # ...and the padding does reach the border pixels
    with pytest.raises(ValueError, match="exceeds the model's maximum"):
        tiled_infer(c, x, tile=0)
    with pytest.raises(ValueError, match="tile_pad"):
        tiled_infer(c, x, tile=16, tile_pad=20)


def test_min_batch_profile_pads_batch(session):
    c = Constrained(session, InputSpec(batch=(2, 4)))
    x = _image(20, 20, seed=7)
    whole = session.infer(x[None])[0]
    y = tiled_infer(c, x, tile=7, tile_pad=12, batch=1)  # 9 tiles, each padded to a batch of 2
    assert np.abs(y - whole).max() <= 1e-5 and all(s[0] == 2 for s in c.shapes)


@pytest.mark.parametrize("n,tile,pad", [(1, 4, 3), (10, 3, 2), (100, 32, 8), (257, 64, 40), (33, 33, 0)])
def test_plan_axis_invariants(n, tile, pad):
    plan = plan_tiles(n, 5, tile=tile, tile_pad=pad)
    ax = plan.rows
    # cores partition the image; each core <= tile; one window size; windows inside the image
    assert ax.cores[0][0] == 0 and ax.cores[-1][1] == n
    assert all(a < b and b - a <= tile for a, b in ax.cores)
    assert all(ax.cores[i][1] == ax.cores[i + 1][0] for i in range(len(ax.cores) - 1))
    for (a, b), s in zip(ax.cores, ax.starts):
        assert 0 <= s and s + ax.window <= n
        assert s <= max(a - pad, 0) and s + ax.window >= min(b + pad, n)  # >= pad context or a border


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError):
        plan_tiles(10, 10, tile=-1, tile_pad=2)
    with pytest.raises(ValueError):
        plan_tiles(10, 10, tile=4, tile_pad=2, batch=0)
    with pytest.raises(ValueError):
        plan_tiles(0, 10, tile=4, tile_pad=2)


class BlockMean(Session):
    """A pixel-unshuffle model in miniature: the mean of each 4x4 block, counted from the input's
    origin, blurred by one 3x3 box (radius 1 block = 4 px), upsampled 2x. Its output changes when the
    input shifts by less than a block, as a Real-ESRGAN x2/x1 network's does."""

    def __init__(self) -> None:
        super().__init__()
        from srdeploy.runtime.metadata import ModelInfo

        self.info = ModelInfo(scale=2, receptive_radius=8, size_multiple=4, min_size=4)
        self.input_spec = InputSpec()
        self.shapes: list[tuple[int, ...]] = []

    def _infer(self, x):
        n, c, h, w = x.shape
        assert h % 4 == 0 and w % 4 == 0, (h, w)  # the model's requirement: the tiler must meet it
        self.shapes.append(x.shape)
        b = x.reshape(n, c, h // 4, 4, w // 4, 4).mean(axis=(3, 5))
        p = np.pad(b, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        b = sum(p[:, :, i:i + h // 4, j:j + w // 4] for i in range(3) for j in range(3)) / 9
        return np.repeat(np.repeat(b, 8, axis=2), 8, axis=3).astype(np.float32)


@pytest.mark.parametrize("h, w, tile", [(37, 50, 10), (64, 64, 16), (5, 7, 3), (23, 41, 0)])
def test_size_multiple_windows_are_multiples_and_aligned(h, w, tile):
    """Windows are a multiple of the model's size multiple and start on one, so each tile sees the
    blocks the whole image sees: tiled == whole (which is padded to the multiple too)."""
    sess = BlockMean()
    x = _image(h, w, seed=3)
    plan = plan_tiles(h, w, tile=tile, tile_pad=8, multiple=4, minimum=4)
    for ax in (plan.rows, plan.cols):
        assert ax.window % 4 == 0 and ax.padded % 4 == 0 and all(s % 4 == 0 for s in ax.starts)
        for (a, b), s in zip(ax.cores, ax.starts):  # every core keeps its margin inside the window
            assert s <= max(a - 8, 0) and min(b + 8, ax.size) <= s + ax.window
    whole = tiled_infer(sess, x, tile=0, tile_pad=8)
    tiled = tiled_infer(sess, x, tile=tile, tile_pad=8)
    assert whole.shape == tiled.shape == (3, 2 * h, 2 * w)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
