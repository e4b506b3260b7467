"""Every model family, end to end: build the original with random weights, save it as its codebase
does, ``srdeploy import`` it, ``srdeploy export`` it, and compare the ONNX model with the original
under the original's own pre/post-processing (FP32: max abs <= 1e-4); then ``srdeploy upscale``
with a tile much smaller than the image against the whole image (max 1/255 of 8-bit pixels).

The originals: srdeploy's families rebuild PyTorch-GAN, BasicSR, Lornatang and leftthomas with
their parameter names; the reference outputs come from ``tests/_foreign.py``, written apart from
them. spandrel's families are built with spandrel's own classes and compared with spandrel's
module (clamped, as spandrel's call does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import _foreign  # noqa: E402


def spread_output(model, *, mean: float, std: float, channels: int = 3, seed: int = 0) -> None:
    """Normalise the last convolution per output channel on a calibration input (mean, std), so that
    outputs cover [0, 1] instead of saturating the clamp (every value then moves every comparison)."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    seen = {}
    hook = last.register_forward_hook(lambda _m, _a, out: seen.update(z=out))
    x = torch.nn.functional.interpolate(torch.rand(1, channels, 6, 6, generator=torch.Generator().manual_seed(seed)),
                                        size=(40, 40), mode="bilinear", align_corners=False)
    with torch.no_grad():
        model(x)
        hook.remove()
        mu, sd = seen["z"].mean(dim=(0, 2, 3)), seen["z"].std(dim=(0, 2, 3)) + 1e-6
        last.weight.mul_((std / sd)[:, None, None, None])
        last.bias.copy_((last.bias - mu) * (std / sd) + mean)


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    scale: int
    build: Callable  # () -> module with the original's parameter names, random weights
    save: Callable  # (state_dict, folder) -> file as the codebase writes it
    reference: Callable | None = None  # (state_dict, x) -> original output; None: the module itself, clamped
    mean: float = 0.5  # last-conv output statistics that spread the final output over [0, 1]
    std: float = 0.25
    window: int | None = None
    channels: int = 3


def _pt(obj, folder: Path, name: str) -> Path:
    torch.save(obj, folder / name)
    return folder / name


def _build(cls, **kw):
    def make():
        from srdeploy.export.fuse import randomize_bn

        torch.manual_seed(0)
        return randomize_bn(cls(**kw)).eval()
    return make


def _spandrel(name: str, **kw):
    def make():
        import importlib

        torch.manual_seed(0)
        mod = importlib.import_module(f"spandrel.architectures.{name}")
        return getattr(mod, name)(**kw).eval()
    return make


def _safetensors(sd, folder: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _foreign.realesrgan_keys(sd).items()}, str(folder / "x2.safetensors"))
    return folder / "x2.safetensors"


def _cases() -> list[Case]:
    from srdeploy.train import foreign_archs as fa

    return [
        # PyTorch-GAN srgan.py: torch.save(generator.state_dict(), "saved_models/generator_%d.pth" % epoch)
        Case("pytorch-gan", "PyTorch-GAN-SRGAN", 4, _build(fa.PyTorchGANGenerator, n_residual_blocks=2, channels=8),
             lambda sd, d: _pt(sd, d, "generator_3.pth"), _foreign.pytorch_gan, mean=0.0, std=1.0),
        # BasicSR save_network(..., param_key=['params', 'params_ema']): the EMA weights are the ones to use
        Case("msrresnet-x3", "BasicSR-MSRResNet", 3, _build(fa.MSRResNet, num_feat=8, num_block=2, upscale=3),
             lambda sd, d: _pt({"params": _foreign.randomize(sd, seed=5), "params_ema": sd}, d, "net_g_5000.pth"),
             _foreign.msrresnet, mean=0.0, std=0.15),
        # Lornatang train_net.py save_checkpoint({"epoch", "best_psnr", "state_dict", "ema_state_dict", ...}),
        # here from a torch.compile'd model (keys prefixed _orig_mod.)
        Case("lornatang-x8", "Lornatang-SRResNet", 8, _build(fa.LornatangSRResNet, channels=8, num_rcb=2, upscale=8),
             lambda sd, d: _pt({"epoch": 10, "best_psnr": 27.5, "best_ssim": 0.8,
                                "state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}, "ema_state_dict": None,
                                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}},
                               d, "g_best.pth.tar"),
             _foreign.lornatang),
        # leftthomas train.py: torch.save(netG.state_dict(), ...), from a DataParallel model
        Case("leftthomas-x2", "leftthomas-SRGAN", 2, _build(fa.LeftthomasGenerator, channels=8, scale_factor=2),
             lambda sd, d: _pt({f"module.{k}": v for k, v in sd.items()}, d, "netG_epoch_2_100.pth"),
             _foreign.leftthomas, mean=0.0, std=1.0),
        # ESRGAN (original repository, old arch): a bare state dict
        Case("esrgan-x4", "spandrel", 4, _spandrel("ESRGAN", in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4),
             lambda sd, d: _pt(sd, d, "RRDB_ESRGAN_x4.pth")),
        # Real-ESRGAN x2plus: new-arch keys, pixel-unshuffle by 2; here as safetensors
        Case("realesrgan-x2", "spandrel", 2,
             _spandrel("ESRGAN", in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2),
             _safetensors),
        # Real-ESRGAN 1x models (pixel-unshuffle by 4), {"params_ema": ...}
        Case("realesrgan-x1", "spandrel", 1,
             _spandrel("ESRGAN", in_nc=48, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=4),
             lambda sd, d: _pt({"params_ema": _foreign.realesrgan_keys(sd)}, d, "1x_model.pth")),
        # Real-ESRGAN Compact (SRVGGNetCompact), {"params": ...}
        Case("compact-x4", "spandrel", 4, _spandrel("Compact", num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2,
                                                    upscale=4),
             lambda sd, d: _pt({"params": sd}, d, "realesr-general-x4v3.pth"), mean=0.0, std=0.15),
        Case("compact-gray-x2", "spandrel", 2, _spandrel("Compact", num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2,
                                                         upscale=2),
             lambda sd, d: _pt({"params": sd}, d, "gray_x2.pth"), mean=0.0, std=0.15, channels=1),
        Case("span-x4", "spandrel", 4, _spandrel("SPAN", num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=4),
             lambda sd, d: _pt({"params_ema": sd}, d, "spanx4.pth")),
        # SwinIR: window attention, exported at one fixed window and tiled at exactly that size
        Case("swinir-x2", "spandrel", 2,
             _spandrel("SwinIR", img_size=16, in_chans=3, embed_dim=12, depths=[2], num_heads=[2], window_size=4,
                       mlp_ratio=2, upscale=2, upsampler="pixelshuffledirect"),
             lambda sd, d: _pt({"params": sd}, d, "swinir_x2.pth"), window=32),
    ]


CASES = {c.name: c for c in _cases()}


@pytest.fixture(scope="module")
def margin_images(tmp_path_factory, set5) -> Path:
    """Two 72x64 crops of Set5 content (the margin measurement's calibration images)."""
    import cv2

    d = tmp_path_factory.mktemp("margin_images")
    for name in ("baby.png", "bird.png"):
        img = cv2.imread(str(set5 / name))
        cv2.imwrite(str(d / name), img[110:174, 80:152])
    return d


@pytest.fixture(scope="module")
def test_image(tmp_path_factory, set5) -> Path:
    """A 52x60 crop of another Set5 image (not a calibration one): the upscale input."""
    import cv2

    path = tmp_path_factory.mktemp("image") / "butterfly.png"
    cv2.imwrite(str(path), cv2.imread(str(set5 / "butterfly.png"))[80:132, 90:150])
    return path


def _import_and_export(case: Case, tmp_path: Path, *export_flags: str):
    """The original module (outputs spread over [0, 1]) saved as its codebase saves it, then
    ``srdeploy import`` and ``srdeploy export EXPORT_FLAGS``: (module, state dict, checkpoint, ONNX)."""
    from srdeploy.cli import main

    module = case.build()
    spread_output(module, mean=case.mean, std=case.std, channels=case.channels)
    sd = {k: v.detach().clone() for k, v in module.state_dict().items()}
    ckpt, onnx_path = tmp_path / "model.pt", tmp_path / "model.onnx"
    assert main(["import", str(case.save(sd, tmp_path)), "-o", str(ckpt)]) == 0
    assert main(["export", str(ckpt), "-o", str(onnx_path), "-q", *export_flags]) == 0
    return module, sd, ckpt, onnx_path


def _reference(case: Case, module, sd):
    if case.reference is not None:
        return lambda x: case.reference(sd, x)
    return lambda x: module(x).clamp(0, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_family_import_export_matches_the_original(name, tmp_path, margin_images, test_image):
    from srdeploy.cli import main
    from srdeploy.runtime.open import open_session

    case = CASES[name]
    window = ["--window", str(case.window)] if case.window else []
    module, sd, _, onnx_path = _import_and_export(case, tmp_path, "--margin-images", str(margin_images), *window)
    reference = _reference(case, module, sd)

    # ONNX (through the runtime) against the original under its own conventions.
    sizes = [(case.window, case.window)] if case.window else [(20, 24), (36, 28)]
    with open_session(onnx_path) as sess:
        info = sess.info
        assert (info.arch, info.scale, info.channels) == (case.family, case.scale, case.channels)
        for h, w in sizes:
            x = torch.rand(1, case.channels, h, w, generator=torch.Generator().manual_seed(h))
            with torch.no_grad():
                want = reference(x).numpy()
            got = sess.infer(x.numpy())
            assert float(np.abs(got - want).max()) <= 1e-4, (h, w)
            assert want.std() > 0.05  # outputs spread over [0, 1]: the comparison sees real values
    assert info.tile_margin is not None and 0 <= info.tile_margin <= info.receptive_radius

    # Tiled (tile 8: many seams in a 52x60 image) against the whole image, 8-bit outputs.
    tiled, whole = tmp_path / "tiled.png", tmp_path / "whole.png"
    assert main(["upscale", "-i", str(test_image), "-o", str(tiled), "--model", str(onnx_path), "--tile", "8",
                 "-q"]) == 0
    import cv2

    got = cv2.imread(str(tiled), cv2.IMREAD_UNCHANGED).astype(int)
    if case.window:  # the graph takes one window only: the whole image comes from the original model
        from srdeploy.runtime.media.images import read_image

        img, _ = read_image(test_image, order="RGB")
        x = torch.from_numpy(img.astype(np.float32).transpose(2, 0, 1)[None] / 255)
        with torch.no_grad():
            y = reference(x)[0].numpy().transpose(1, 2, 0)
        want = np.clip(np.rint(y * 255), 0, 255).astype(int)[:, :, ::-1]
    else:
        assert main(["upscale", "-i", str(test_image), "-o", str(whole), "--model", str(onnx_path), "--tile", "0",
                     "-q"]) == 0
        want = cv2.imread(str(whole), cv2.IMREAD_UNCHANGED).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1


def test_import_records_where_the_weights_came_from(tmp_path):
    """The checkpoint describes itself: family, kwargs read off the shapes, the source's sha256, the
    wrapper and prefix removed, the conventions; and every command's loader rebuilds it."""
    import hashlib

    from srdeploy.train.checkpoint import load_checkpoint, load_generator
    from srdeploy.train.importer import import_weights

    case = CASES["msrresnet-x3"]
    module = case.build()
    sd = {f"module.{k}": v for k, v in module.state_dict().items()}
    src = _pt({"params_ema": sd, "params": sd}, tmp_path, "net_g.pth")
    r = import_weights(src, tmp_path / "m.pt")
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["arch"] == "BasicSR-MSRResNet"
    assert ckpt["kwargs"] == {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_block": 2, "upscale": 3}
    rec = ckpt["import"]
    assert rec["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() == r.source_sha256
    assert (rec["wrapper"], rec["prefix"], rec["source"]) == ("params_ema", "module.", "net_g.pth")
    assert rec["conventions"]["output"] == "clamp" and rec["facts"]["scale"] == 3
    model, _ = load_generator(tmp_path / "m.pt")
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.allclose(model(x), _foreign.msrresnet(module.state_dict(), x), atol=1e-6)


def test_export_records_conventions_and_the_margin_curve(tmp_path, margin_images):
    """The ONNX metadata carries the family's conventions, its facts and the measured margin curve,
    whose last entry is the margin chosen (below 0.5/255) and whose earlier entries are not."""
    from srdeploy.export.margin import KEY_MARGIN_CURVE
    from srdeploy.export.onnx_export import read_props
    from srdeploy.export.pipeline import KEY_CONVENTIONS, MarginSettings, export_checkpoint
    from srdeploy.train.importer import import_weights

    case = CASES["pytorch-gan"]
    module = case.build()
    spread_output(module, mean=0.0, std=1.0)
    src = case.save(module.state_dict(), tmp_path)
    import_weights(src, tmp_path / "g.pt")
    r = export_checkpoint(tmp_path / "g.pt", tmp_path / "g.onnx", log=lambda *a: None,
                          margin=MarginSettings(images=margin_images))
    props = read_props(tmp_path / "g.onnx")
    conv = json.loads(props[KEY_CONVENTIONS])
    assert conv["family"] == "PyTorch-GAN-SRGAN" and conv["output"] == "tanh_denorm"
    assert conv["mean"] == pytest.approx([0.485, 0.456, 0.406])
    curve = json.loads(props[KEY_MARGIN_CURVE])
    assert curve["curve"][-1][0] == r.info.tile_margin == int(props["srdeploy.tile_margin"])
    assert curve["curve"][-1][1] < 0.5 or r.info.tile_margin == r.info.receptive_radius
    assert all(v >= 0.5 for _, v in curve["curve"][:-1])


@pytest.mark.parametrize("name", ["msrresnet-x3", "pytorch-gan", "realesrgan-x2"])
def test_probe_radius_bounds_the_real_dependency(name):
    """The impulse probe's radius bounds the input pixels that reach an output pixel (autograd,
    every sub-pixel phase of the centre) and is tight, for families it knows nothing about."""
    from srdeploy.train.families import Deployed, Facts, family
    from srdeploy.train.radius import measure_radius

    case = CASES[name]
    fam = family(case.family)
    net = case.build()
    facts = Facts(scale=case.scale, size_multiple=4 if name == "realesrgan-x2" else 1)
    model = Deployed(net, fam.conventions, facts)
    model.clamp_output = False  # clamped pixels have no gradient
    r = measure_radius(model, multiple=facts.size_multiple)
    assert r.method == "probe"
    size = -(-(2 * r.radius + 9) // 4) * 4
    x = torch.rand(1, 3, size, size, requires_grad=True)
    centre, reach = size // 2, 0
    for dy in range(case.scale):
        for dx in range(case.scale):
            x.grad = None
            model(x)[0, :, centre * case.scale + dy, centre * case.scale + dx].sum().backward()
            nz = (x.grad[0].abs().sum(0) > 0).nonzero()
            reach = max(reach, int((nz - centre).abs().max()))
    assert r.radius - 1 <= reach <= r.radius


def test_a_gray_model_upscales_gray_colour_and_alpha(tmp_path):
    """A 1-channel model (N x 1 x H x W) through the runtime: a gray image runs as it is, each colour
    channel runs as its own gray image, and alpha through the model is one more gray pass."""
    from srdeploy.runtime.open import open_session
    from srdeploy.runtime.upscale import Upscaler
    from srdeploy.train.importer import import_weights

    case = CASES["compact-gray-x2"]
    module = case.build()
    spread_output(module, mean=case.mean, std=case.std, channels=1)
    import_weights(case.save(module.state_dict(), tmp_path), tmp_path / "gray.pt")

    def model(plane: np.ndarray) -> np.ndarray:  # uint8 H x W -> uint8 2H x 2W, as the original runs it
        with torch.no_grad():
            y = module(torch.from_numpy(plane.astype(np.float32)[None, None] / 255)).clamp(0, 1)[0, 0].numpy()
        return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (21, 17, 4), dtype=np.uint8)
    with open_session(tmp_path / "gray.pt", backend="torch") as sess:
        assert sess.input_spec.channels == 1 and sess.info.channel_order == "GRAY"
        up = Upscaler(sess, tile=8, tile_pad=sess.info.receptive_radius)
        out = up.upscale(rgba)
        gray = up.upscale(rgba[:, :, 0])
    assert out.shape == (42, 34, 4) and gray.shape == (42, 34)
    for c in range(4):
        assert np.abs(out[:, :, c].astype(int) - model(rgba[:, :, c])).max() <= 1, c
    assert np.abs(gray.astype(int) - model(rgba[:, :, 0])).max() <= 1


@pytest.mark.parametrize("name", ["pytorch-gan", "msrresnet-x3", "lornatang-x8", "leftthomas-x2"])
def test_deployable_model_is_the_original_under_its_conventions(name):
    """In PyTorch, before any export: the family's network with its conventions (Deployed) computes
    what the original code computes (the independent references of _foreign), including
    PyTorch-GAN's eps 0.8 BatchNorms and Tanh in ImageNet-normalised space."""
    from srdeploy.train.families import deployable

    case = CASES[name]
    module = case.build()
    spread_output(module, mean=case.mean, std=case.std)
    sd = module.state_dict()
    model = deployable(case.family, _detected(case.family, sd), sd)
    x = torch.rand(2, 3, 11, 13, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = model(x), case.reference(sd, x)
    assert got.shape == (2, 3, 11 * case.scale, 13 * case.scale)
    assert float((got - want).abs().max()) <= 1e-5
    assert float(want.std()) > 0.05


def _detected(family_name: str, sd) -> dict:
    from srdeploy.train.families import family

    return family(family_name).detect(sd)


@pytest.mark.parametrize("edit, needle", [
    ({"scale": 8}, "checkpoint kwargs ['scale'] disagree with the weights (scale is 8, the weights say 4)"),
    ({"architecture": "SwinIR"}, "the weights are a Compact, but the checkpoint says 'SwinIR'"),
])
def test_an_edited_spandrel_checkpoint_is_refused(tmp_path, edit, needle):
    """spandrel builds from the weights, never from the file's kwargs; a record that disagrees with
    the weights is one line naming the file."""
    from srdeploy.train.checkpoint import load_generator
    from srdeploy.train.importer import import_weights

    case = CASES["compact-x4"]
    import_weights(case.save(case.build().state_dict(), tmp_path), tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    ckpt["kwargs"].update(edit)
    torch.save(ckpt, tmp_path / "edited.pt")
    with pytest.raises(ValueError) as info:
        load_generator(tmp_path / "edited.pt")
    assert str(info.value).startswith(f"{tmp_path / 'edited.pt'}: ") and needle in str(info.value)


# the input feeds a Conv (and maybe a skip) / a normalisation or a pixel-unshuffle comes first
TRT_OK = ("msrresnet-x3", "compact-x4", "esrgan-x4", "leftthomas-x2", "lornatang-x8")
TRT_REFUSED = ("pytorch-gan", "realesrgan-x2", "span-x4")


@pytest.mark.slow
@pytest.mark.parametrize("name", TRT_OK + TRT_REFUSED)
def test_quantize_and_fp16_per_family(name, tmp_path, margin_images, capsys):
    """`quantize --target tensorrt` on imported families: where the input enters a convolution (a bilinear
    skip beside it is fine) the file is what TensorRT parses, within the loss limit; where a normalisation
    or a pixel-unshuffle comes first, one line says why and what to use instead, and nothing is written.
    CPU INT8 (the sibling --precision int8 opens) and `export --fp16` work on every one."""
    import onnx

    from srdeploy.cli import main
    from srdeploy.export.int8_trt import tensorrt_int8_problems

    case = CASES[name]
    _, _, ckpt, fp32 = _import_and_export(case, tmp_path, "--no-margin")
    capsys.readouterr()
    calib = ["--calib", str(margin_images), "--calib-images", "4", "--crop", str(min(16, 64 // case.scale)),
             "--val", str(margin_images), "--max-loss", "1", "--threads", "1", "-q"]
    rc = main(["quantize", str(fp32), "--target", "tensorrt", *calib])
    out = tmp_path / "model_int8_trt.onnx"
    if name in TRT_OK:
        assert rc == 0 and out.is_file(), capsys.readouterr().err
        assert tensorrt_int8_problems(onnx.load(str(out))) == []
    else:
        err = capsys.readouterr().err.strip()
        assert rc == 1 and len(err.splitlines()) == 1 and not out.exists(), err
        assert "to feed one Conv directly" in err and "--target cpu" in err and "build-engine --fp16" in err
    # the CPU target takes every one of them (what the refusal points to), and the FP16 export too
    assert main(["quantize", str(fp32), *calib]) == 0
    assert main(["export", str(ckpt), "-o", str(tmp_path / "fp16.onnx"), "--no-margin", "--fp16", "-q"]) == 0
    from srdeploy.runtime.open import open_session

    x = np.random.default_rng(0).random((1, case.channels, 24, 28), dtype=np.float32)
    with open_session(fp32) as ref, open_session(fp32, precision="int8") as q8, \
            open_session(tmp_path / "fp16_fp16.onnx") as f16:
        want = ref.infer(x)
        # INT8 quality was held by quantize's --max-loss on real images; on random noise it is no test
        assert q8.precision == "int8" and q8.infer(x).shape == want.shape
        assert f16.precision == "fp16" and float(np.abs(f16.infer(x) - want).max()) <= 2 / 255
