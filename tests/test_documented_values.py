"""The numbers the docs state (README.md, docs/*.md), pinned as literals (not the code's own constants).

Each value is checked as a constant and, where cheap, through the behaviour it controls, so a
changed constant and a constant that is no longer used both fail here.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from srdeploy.cli import main
from srdeploy.cli import build_parser


# ---------------------------------------------------------------- verify tolerances (docs/export.md "Verify")
def test_verify_tolerances():
    from srdeploy.export.pipeline import FP16_TOLERANCE
    from srdeploy.export.verify import DEFAULT_SIZES, FP16_ATOL, FP16_MIN_PSNR, FP32_ATOL, Tolerance, judge

    assert FP32_ATOL == 1e-4
    assert FP16_ATOL == 2 / 255 and FP16_TOLERANCE == 2 / 255  # export's FP16 self-check uses the same bound
    assert FP16_MIN_PSNR == 45.0
    fp32, fp16 = Tolerance.for_precision("fp32"), Tolerance.for_precision("fp16")
    assert fp32 == Tolerance(1e-4, None) and fp16 == Tolerance(2 / 255, 45.0)
    # the rule at its edges: max abs <= atol (and PSNR >= floor for FP16)
    assert judge(0.99e-4, 120.0, fp32)[0] and not judge(1.01e-4, 120.0, fp32)[0]
    assert judge(1.99 / 255, 46.0, fp16)[0] and not judge(2.01 / 255, 46.0, fp16)[0]
    assert not judge(1 / 255, 44.9, fp16)[0]
    # docs/export.md: random inputs 1x33x47, 2x40x64, 1x96x71 (odd, non-square, batch 2)
    assert DEFAULT_SIZES == ((1, 33, 47), (2, 40, 64), (1, 96, 71))


# ---------------------------------------------------------------- FP16 overflow threshold (docs/export.md: 2^14)
def test_fp16_threshold_is_2_to_the_14():
    import torch

    from srdeploy.export.fp16 import DEFAULT_THRESHOLD, analyse_activations

    assert DEFAULT_THRESHOLD == 16384.0 == 2 ** 14
    # a 1x1 convolution multiplying by c: its output is risky above 16384, not below
    for c, risky in ((16000.0, False), (17000.0, True)):
        conv = torch.nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            conv.weight.fill_(c)
        model = torch.nn.Sequential(conv)
        report = analyse_activations(model, [np.ones((1, 1, 2, 2), np.float32)])
        assert report.threshold == 16384.0
        assert ("0" in report.risky_out) is risky, (c, report.risky_out)


# ---------------------------------------------------------------- tiling defaults (docs/runtime.md "Tiling")
def test_default_tile_and_margin_formula():
    from srdeploy.runtime.settings import DEFAULT_TILE, default_tile_pad

    assert DEFAULT_TILE == 256
    # max(12, ceil(0.3 x radius)), never more than the radius itself
    for radius, pad in ((5, 5), (12, 12), (30, 12), (40, 12), (41, 13), (48, 15), (50, 15), (100, 30), (131, 40)):
        assert default_tile_pad(radius) == pad, radius
        assert pad == min(radius, max(12, math.ceil(0.3 * radius)))


def test_measured_margin_first_then_the_radius_rule():
    """The margin measured at export (the smallest within 0.5/255 of the whole image) is the default
    --tile-pad; the radius rule only for models without it; an explicit --tile-pad wins."""
    from srdeploy.export.margin import THRESHOLD
    from srdeploy.runtime.settings import TileSettings

    assert THRESHOLD == 0.5 / 255
    assert TileSettings().pad_for(40, 7) == 7 and TileSettings().pad_for(40, None) == 12
    assert TileSettings(tile_pad=3).pad_for(40, 7) == 3


def test_bundled_model_radius_40_margin_12():
    from srdeploy.runtime.open import default_model_path, open_session
    from srdeploy.runtime.upscale import Upscaler

    with open_session(default_model_path(), threads=1) as s:
        up = Upscaler(s)
        assert s.info.receptive_radius == 40 and (up.tile, up.tile_pad) == (256, 12)


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory) -> Path:
    """A real 20-block SRResNet x4 (4 channels, cheap): receptive radius 48, over the paper model's 40."""
    from _models import export_spread_model

    return export_spread_model(tmp_path_factory.mktemp("deep") / "deep_x4.onnx", scale=4, num_blocks=20,
                               channels=4)


def test_default_margin_of_a_model_with_radius_over_40(deep_model, tmp_path, capsys):
    import cv2

    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.tiling import tiled_infer
    from srdeploy.runtime.upscale import Upscaler

    with open_session(deep_model, threads=1) as s:
        assert s.info.receptive_radius == 48
        up = Upscaler(s, tile=10)
        assert up.tile_pad == 15  # ceil(0.3 x 48), not 12 and not the radius
        # and it is the margin used: same output as tiling with 15 explicitly, not with 12 or 48
        x = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)  # windows 40 vs 34 < 64
        got = up.upscale(np.ascontiguousarray(x.transpose(1, 2, 0))).transpose(2, 0, 1)
        assert np.abs(got - tiled_infer(s, x, tile=10, tile_pad=15)).max() <= 1e-6
        assert np.abs(got - tiled_infer(s, x, tile=10, tile_pad=12)).max() > 1e-4
    # the CLI's default and the line it prints first
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.full((8, 8, 3), 100, np.uint8))
    assert main(["upscale", "-q", "-i", str(src), "-o", str(tmp_path / "out.png"), "--model", str(deep_model)]) == 0
    assert "tile-pad 15, batch 1" in capsys.readouterr().err  # tile: auto by default (memory budget)
    assert main(["upscale", "-q", "-i", str(src), "-o", str(tmp_path / "out256.png"), "--model", str(deep_model),
                 "--tile", "256"]) == 0
    assert "tile 256, tile-pad 15, batch 1" in capsys.readouterr().err


# ---------------------------------------------------------------- other defaults the docs and --help state
def test_cli_defaults():
    p = build_parser()
    up = p.parse_args(["upscale", "-i", "a.png", "-o", "out"])
    assert (up.tile, up.tile_pad, up.batch, up.feather, up.alpha, up.quality, up.backend, up.max_memory) == \
        ("auto", None, 1, 0, "model", None, "auto", None)  # None: the formula above / 95 / 1 GiB or half the RAM
    demo = p.parse_args(["demo"])
    assert (demo.output, demo.crop, demo.zoom) == ("demo.png", 160, 2)
    from srdeploy.export.engine import DEFAULT_WORKSPACE_GB
    from srdeploy.export.onnx_export import OPSET

    assert OPSET == 17 and DEFAULT_WORKSPACE_GB == 4.0
    b = p.parse_args(["build-engine", "m.onnx", "-o", "m.engine"])
    assert b.opt_level == 3 and b.workspace is None


def test_jpeg_and_webp_quality_default_95(tmp_path):
    import cv2

    from srdeploy.runtime.media.images import write_image

    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for ext, flag in ((".jpg", cv2.IMWRITE_JPEG_QUALITY), (".webp", cv2.IMWRITE_WEBP_QUALITY)):
        write_image(tmp_path / f"a{ext}", img)
        assert (tmp_path / f"a{ext}").read_bytes() == cv2.imencode(ext, img[..., ::-1], [flag, 95])[1].tobytes()


def _png_header_only(path: Path, width: int, height: int) -> None:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
                     + struct.pack(">I", zlib.crc32(chunk)))


@pytest.mark.skipif("SRDEPLOY_MAX_IMAGE_PIXELS" in os.environ, reason="SRDEPLOY_MAX_IMAGE_PIXELS is set here")
def test_image_size_limit_200_megapixels(tmp_path):
    from srdeploy.runtime.media.images import read_image

    over, under = tmp_path / "over.png", tmp_path / "under.png"
    _png_header_only(over, 20000, 10001)   # 200.02 MP declared: refused before decoding
    _png_header_only(under, 20000, 9999)   # 199.98 MP: passes the size check, then fails as truncated
    with pytest.raises(ValueError, match="over.png: declared image size 20000x10001.*SRDEPLOY_MAX_IMAGE_PIXELS"):
        read_image(over)
    with pytest.raises(ValueError, match="under.png: truncated PNG"):
        read_image(under)


def test_activation_factors_per_path():
    from srdeploy.runtime.budget import ACTIVATION_FACTORS, ORT_ACTIVATION_FACTOR

    assert ORT_ACTIVATION_FACTOR == 1.45
    assert ACTIVATION_FACTORS == {("openvino", "fp32"): 0.90, ("openvino", "bf16"): 0.50, ("openvino", "int8"): 0.40}


# ---------------------------------------------------------------- the pages still state the pinned values
ROOT = Path(__file__).resolve().parents[1]
STATED = {  # page -> sentences (whitespace-normalised) that carry the values pinned above
    "docs/export.md": ["exports opset 17", "exceeds 2^14 (a quarter of FP16's 65504)",
                       "random inputs (1x33x47, 2x40x64, 1x96x71:",
                       "Tolerances: FP32 max abs <= 1e-4; FP16 max abs <= 2/255 and PSNR >= 45 dB."],
    "docs/runtime.md": ["The default margin is the one measured for the model at export (`srdeploy.tile_margin`, the "
                        "smallest margin whose tiled output stays within 0.5/255 of the whole image); for models "
                        "without it `max(12, ceil(0.3 x radius))`, at most the radius: 12 for the bundled model.",
                        "(40 LR pixels for the x4 SRResNet, from its metadata)",
                        "`Upscaler(session)` without settings uses tile 256",
                        "JPEG 0-100 / WebP 1-100 is an error (default 95)",
                        "declared size > 200 MP: `SRDEPLOY_MAX_IMAGE_PIXELS`",
                        "default 1 GiB or half the available RAM, whichever is smaller",
                        "(`--alpha model`, default)", "default `auto`",
                        "times the path's activation factor: 1.45 for ONNX Runtime's own buffers",
                        "0.90 / 0.50 / 0.40 for OpenVINO FP32 / bf16 / INT8"],
    "docs/train.md": ["**Set5 28.43 dB / 0.8113, Set14 26.09 dB / 0.7050**"],
}


@pytest.mark.parametrize("page", sorted(STATED))
def test_the_docs_still_state_the_pinned_values(page):
    """A value moved or reworded in the docs must be moved here too, so doc and pin cannot drift apart."""
    text = " ".join((ROOT / page).read_text().split())
    missing = [s for s in STATED[page] if s not in text]
    assert not missing, f"{page} no longer states: {missing}"
