"""runtime.settings: the one tiling/session value, its checks and defaults, and how the CLI builds it."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import numpy as np
import pytest

from srdeploy.runtime.open import SessionRecipe, open_session
from srdeploy.runtime.settings import DEFAULT_TILE, RunSettings, TileSettings, default_tile_pad
from srdeploy.runtime.upscale import Upscaler


def test_defaults_and_resolution():
    t = TileSettings()
    assert (t.tile, t.tile_pad, t.batch, t.feather, t.alpha, t.max_memory) == ("auto", None, 1, 0, "model", None)
    assert t.auto and t.fixed_tile() == DEFAULT_TILE
    assert t.pad_for(40) == default_tile_pad(40) == 12 and t.pad_for(5) == 5
    fixed = TileSettings(tile=(32, 48), tile_pad=3)
    assert not fixed.auto and fixed.fixed_tile() == (32, 48) and fixed.pad_for(40) == 3
    # frozen, hashable, and it survives a JSON round trip (plan.json, Ray)
    with pytest.raises(AttributeError):
        fixed.tile = 8
    assert TileSettings(**json.loads(json.dumps(asdict(fixed)))) == fixed and hash(fixed) == hash(fixed)


def test_the_margin_measured_at_export_is_the_default_pad(tiny_srresnet_x2, tmp_path):
    """A model whose metadata carries the margin measured for it (srdeploy.tile_margin) gets it as
    the default --tile-pad, never more than its radius; an explicit tile_pad still wins; a model
    without it keeps the radius rule."""
    import dataclasses
    import shutil

    from srdeploy.export.onnx_export import add_metadata, read_metadata

    t = TileSettings()
    assert t.pad_for(40, 7) == 7 and t.pad_for(40, 99) == 40 and t.pad_for(40, None) == 12
    assert TileSettings(tile_pad=3).pad_for(40, 7) == 3
    model = tmp_path / "measured.onnx"
    shutil.copyfile(tiny_srresnet_x2, model)
    info = read_metadata(model)
    add_metadata(model, dataclasses.replace(info, tile_margin=info.receptive_radius - 3))
    with open_session(model) as s:
        assert Upscaler(s, TileSettings()).tile_pad == info.receptive_radius - 3
    with open_session(tiny_srresnet_x2) as s:
        assert Upscaler(s, TileSettings()).tile_pad == default_tile_pad(info.receptive_radius)


@pytest.mark.parametrize("bad", [dict(tile=-1), dict(tile="big"), dict(tile=(8, 8, 8)), dict(tile=2.5),
                                 dict(tile_pad=-1), dict(batch=0), dict(feather=-2), dict(max_memory=0),
                                 dict(alpha="nearest"), dict(batch=True)])
def test_out_of_range_values_get_one_message_naming_every_value(bad):
    with pytest.raises(ValueError, match=r"tile settings: need .* got tile=.*tile_pad=.*batch=.*feather=.*"
                                         r"max_memory=.*alpha="):
        TileSettings(**bad)


def test_run_settings_types():
    recipe = SessionRecipe("m.onnx")
    assert RunSettings(recipe).tiling == TileSettings()
    with pytest.raises(TypeError, match="SessionRecipe and a TileSettings"):
        RunSettings("m.onnx", TileSettings())
    with pytest.raises(TypeError, match="SessionRecipe and a TileSettings"):
        RunSettings(recipe, {"tile": 8})


def test_upscaler_takes_the_value_or_keywords(tiny_srresnet_x2):
    img = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    with open_session(tiny_srresnet_x2, threads=1) as s:
        radius = s.info.receptive_radius
        by_value = Upscaler(s, TileSettings(tile=8, tile_pad=2, batch=3))
        by_keywords = Upscaler(s, tile=8, tile_pad=2, batch=3)
        assert by_value.settings == by_keywords.settings
        assert (by_value.tile, by_value.tile_pad, by_value.batch) == (8, 2, 3)
        np.testing.assert_array_equal(by_value.upscale(img), by_keywords.upscale(img))
        # keywords keep the library's fixed default tile; the value's default is "auto"
        assert Upscaler(s).tile == DEFAULT_TILE and Upscaler(s, TileSettings()).tile == "auto"
        assert Upscaler(s, TileSettings()).tile_pad == default_tile_pad(radius)
        with pytest.raises(TypeError, match="settings must be a TileSettings"):
            Upscaler(s, TileSettings(), tile=8)
        with pytest.raises(TypeError, match="settings must be a TileSettings"):
            Upscaler(s, {"tile": 8})


def _parser(tile_default="auto") -> argparse.ArgumentParser:
    from srdeploy.runtime.cli import add_session_args, add_tile_args

    p = argparse.ArgumentParser()
    add_session_args(p)
    add_tile_args(p, tile_default=tile_default)
    p.add_argument("--feather", type=int, default=0)
    return p


def test_settings_from_args_builds_it_once(tiny_srresnet_x2):
    from srdeploy.runtime.cli import settings_from_args

    args = _parser().parse_args(["--model", str(tiny_srresnet_x2), "--tile", "64", "--tile-pad", "5", "--batch", "2",
                                 "--feather", "3", "--max-memory", "512M", "--threads", "1"])
    run = settings_from_args(args)
    assert run.tiling == TileSettings(tile=64, tile_pad=5, batch=2, feather=3, max_memory=512 << 20)
    assert (run.recipe.model, run.recipe.threads) == (str(tiny_srresnet_x2), 1)
    with pytest.raises(ValueError, match="tile settings: need"):
        settings_from_args(_parser().parse_args(["--model", str(tiny_srresnet_x2), "--batch", "0"]))
    # eval's --tile defaults to None: the fixed tile, or "auto" when a budget is given
    eval_like = _parser(tile_default=None)
    assert settings_from_args(eval_like.parse_args(["--model", str(tiny_srresnet_x2)])).tiling.tile == DEFAULT_TILE
    assert settings_from_args(eval_like.parse_args(["--model", str(tiny_srresnet_x2),
                                                    "--max-memory", "1G"])).tiling.tile == "auto"
