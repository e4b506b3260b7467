"""Issue 25 item 16: ``srdeploy eval`` of a deployed model file (and ``--bicubic``) on the runtime-only install.

The runtime-only install has numpy, onnxruntime and OpenCV, no torch and no Pillow. The commands
run in a subprocess where importing torch, torchvision or PIL fails as it would there (a meta-path
finder raising ModuleNotFoundError), and must give exactly the figures of a normal run. The
images are read by the runtime's reader (OpenCV); ``read_rgb8`` must give the pixels Pillow gives
(``train.data.load_rgb``, which checkpoints and training validation keep using).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srdeploy.export.runtime_eval import read_rgb8
from srdeploy.train.data import list_images, load_rgb

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "models" / "srresnet_x4.onnx"

# `python -c` program: torch, torchvision, PIL and onnx (the export extra's) cannot be imported, then
# `srdeploy ARGS...`.
WITHOUT_TORCH_AND_PIL = """
import sys
BLOCKED = ("torch", "torchvision", "PIL", "onnx")

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (runtime-only install)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
for name in list(sys.modules):
    if name.partition(".")[0] in BLOCKED:
        del sys.modules[name]
from srdeploy.cli import main
code = main(sys.argv[1:])
loaded = sorted({n.partition(".")[0] for n in sys.modules} & set(BLOCKED))
assert not loaded, loaded
sys.exit(code)
"""


def _eval(*args, runtime_only: bool) -> subprocess.CompletedProcess:
    prog = WITHOUT_TORCH_AND_PIL if runtime_only else "import sys; from srdeploy.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", prog, "eval", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_the_blocker_really_blocks():
    """The check itself can fail: a checkpoint (which needs torch) is refused by it with the install hint."""
    proc = _eval(ROOT / "models" / "srresnet_x4.pt", ROOT / "models", runtime_only=True)
    assert proc.returncode == 1 and "torch" in proc.stderr, proc.stderr


def test_bicubic_eval_without_torch_and_pil(set5, set14, tmp_path):
    """The documented bicubic baseline: Set5 28.43 dB / 0.8113, Set14 26.09 / 0.7050, per image as a normal run."""
    runs = {}
    for runtime_only in (True, False):
        out = tmp_path / f"bicubic_{runtime_only}.json"
        proc = _eval("--bicubic", set5, set14, "-q", "--json", out, runtime_only=runtime_only)
        assert proc.returncode == 0, proc.stderr
        runs[runtime_only] = json.loads(out.read_text())
    sets = {s["name"]: s for s in runs[True]["sets"]}
    assert (round(sets["Set5"]["psnr"], 2), round(sets["Set5"]["ssim"], 4)) == (28.43, 0.8113)
    assert (round(sets["Set14"]["psnr"], 2), round(sets["Set14"]["ssim"], 4)) == (26.09, 0.7050)
    assert runs[True]["sets"] == runs[False]["sets"]


@pytest.mark.slow
def test_model_file_eval_without_torch_and_pil(set5, tmp_path):
    """The bundled ONNX model on Set5 (one thread): the same per-image PSNR/SSIM as a normal run."""
    runs = {}
    for runtime_only in (True, False):
        out = tmp_path / f"onnx_{runtime_only}.json"
        proc = _eval(BUNDLED, set5, "--threads", "1", "-q", "--json", out, runtime_only=runtime_only)
        assert proc.returncode == 0, proc.stderr
        runs[runtime_only] = json.loads(out.read_text())
    assert runs[True]["sets"] == runs[False]["sets"]
    assert round(runs[True]["sets"][0]["psnr"], 2) == 30.02 and round(runs[True]["sets"][0]["ssim"], 4) == 0.8520


def test_runtime_reader_gives_pillows_pixels(set5, set14, tmp_path):
    """read_rgb8 (OpenCV) == load_rgb (Pillow) on the benchmark images and on gray, gray+alpha, RGBA,
    palette and 16-bit files, which both turn into uint8 RGB the same way."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    alpha = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([gray, alpha])).save(tmp_path / "gray_alpha.png")
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "palette.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    Image.fromarray(gray.astype(np.uint16) * 257 + 3).save(tmp_path / "gray16.png")
    files = list_images(set5) + list_images(set14) + sorted(tmp_path.iterdir())
    for path in files:
        mine, pillow = read_rgb8(path), load_rgb(path)
        assert mine.dtype == np.uint8 and mine.shape == pillow.shape and mine.shape[2] == 3, path
        assert np.array_equal(mine, pillow), path


def test_wrong_scale_is_refused_before_any_image_is_upscaled(set14, monkeypatch, capsys):
    """`eval MODEL --scale 2` on a x4 model: one line naming both scales and the model, as soon as the
    model is open (not after minutes of evaluation)."""
    import srdeploy.runtime.upscale as upscale_mod
    from srdeploy.cli import main

    calls = []
    real = upscale_mod.Upscaler.upscale
    monkeypatch.setattr(upscale_mod.Upscaler, "upscale", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    assert main(["eval", str(BUNDLED), str(set14), "--scale", "2", "-q"]) == 1
    err = capsys.readouterr().err
    assert "--scale 2 does not match the model's scale 4" in err and "srresnet_x4.onnx" in err, err
    assert calls == []
