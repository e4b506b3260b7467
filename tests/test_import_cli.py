"""``srdeploy import``: what it refuses (pickled modules, unknown layouts, damaged files) and how,
what it accepts (wrappers, prefixes, safetensors, --arch, --scale), and ``--list``."""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")


def _srgan_sd(blocks: int = 1, **kw):
    from srdeploy.export.fuse import randomize_bn
    from srdeploy.train.foreign_archs import PyTorchGANGenerator

    torch.manual_seed(0)
    return randomize_bn(PyTorchGANGenerator(n_residual_blocks=blocks, channels=4, **kw)).state_dict()


def _run(capsys, *args) -> tuple[int, str]:
    from srdeploy.cli import main

    rc = main(["import", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out + err


def test_a_pickled_module_is_refused_without_running_it(tmp_path, capsys):
    """A whole pickled nn.Module needs weights_only=False, which would run code from the file: refused
    in one line that names the class and says how to convert the file where it is trusted; the
    class's code never runs (its __setstate__ would create a marker file)."""
    marker = tmp_path / "ran"
    src = tmp_path / "generator.pth"
    code = ("import torch, pathlib\n"
            "class Evil(torch.nn.Module):\n"
            "    def __setstate__(self, state):\n"
            f"        pathlib.Path({str(marker)!r}).write_text('x')\n"
            "        super().__setstate__(state)\n"
            f"torch.save(Evil(), {str(src)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    rc, text = _run(capsys, src, "-o", tmp_path / "out.pt")
    assert rc == 1 and not marker.exists() and not (tmp_path / "out.pt").exists()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert str(src) in text and "pickled Python object (__main__.Evil)" in text
    assert "weights_only=False" in text and "state_dict()" in text  # how to convert, where it is trusted


def test_a_torchscript_archive_is_refused_in_one_line_with_the_conversion(tmp_path, capsys, recwarn):
    """A TorchScript file holds compiled code: refused before torch.load (which would pass it to
    torch.jit.load with a warning), one line naming it and how to keep only its weights."""
    src = tmp_path / "scripted.pt"
    subprocess.run([sys.executable, "-W", "ignore", "-c",
                    f"import torch; torch.jit.script(torch.nn.Conv2d(3, 3, 3)).save({str(src)!r})"], check=True)
    rc, text = _run(capsys, src, "-o", tmp_path / "out.pt")
    lines = [line for line in text.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and not (tmp_path / "out.pt").exists(), text
    assert f"{src}: a TorchScript archive" in text and "torch.jit.load('scripted.pt').state_dict()" in text
    assert not [w for w in recwarn if "TorchScript" in str(w.message)]


def test_an_unknown_layout_names_the_closest_families_and_writes_nothing(tmp_path, capsys):
    sd = _srgan_sd()
    sd = {k.replace("res_blocks.", "blocks."): v for k, v in sd.items()}  # an edited PyTorch-GAN layout
    torch.save(sd, tmp_path / "odd.pth")
    rc, text = _run(capsys, tmp_path / "odd.pth", "-o", tmp_path / "out.pt")
    assert rc == 1 and not (tmp_path / "out.pt").exists()
    assert len(text.strip().splitlines()) == 1
    assert "unknown layout" in text and "closest: PyTorch-GAN-SRGAN" in text and "--list" in text


def test_wrappers_prefixes_arch_and_scale(tmp_path, capsys):
    """Nested wrapper + DataParallel prefix import; --scale is checked, not applied; --arch forces a
    family and refuses weights that are not of it; an existing output needs --overwrite."""
    from srdeploy.train.checkpoint import load_checkpoint

    sd = _srgan_sd(scale=2)
    torch.save({"epoch": 3, "generator": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "g.ckpt")
    rc, text = _run(capsys, tmp_path / "g.ckpt", "-o", tmp_path / "g.pt", "--scale", "2")
    assert rc == 0 and "PyTorch-GAN-SRGAN x2" in text and "[generator]" in text and "prefix module." in text
    assert load_checkpoint(tmp_path / "g.pt")["kwargs"]["scale"] == 2
    rc, text = _run(capsys, tmp_path / "g.ckpt", "-o", tmp_path / "g.pt", "--overwrite", "--scale", "4")
    assert rc == 1 and "x2 PyTorch-GAN-SRGAN model, not x4" in text
    rc, text = _run(capsys, tmp_path / "g.ckpt", "-o", tmp_path / "g.pt")
    assert rc == 1 and "already exists; pass --overwrite" in text
    rc, text = _run(capsys, tmp_path / "g.ckpt", "-o", tmp_path / "other.pt", "--arch", "BasicSR-MSRResNet")
    assert rc == 1 and "cannot import as BasicSR-MSRResNet" in text and not (tmp_path / "other.pt").exists()
    rc, text = _run(capsys, tmp_path / "g.ckpt", "-o", tmp_path / "other.pt", "--arch", "NoSuchNet")
    assert rc == 1 and "unknown model family 'NoSuchNet'" in text


@pytest.mark.parametrize("content, needle", [
    ({"epoch": 3, "lr": 0.1}, "not a state dict"),
    ({"format": "srdeploy.checkpoint", "arch": "SRResNet"}, "already an srdeploy checkpoint"),
    ("junk", "not a state dict"),
])
def test_files_that_are_not_weights_are_one_line(tmp_path, capsys, content, needle):
    torch.save(content, tmp_path / "x.pth")
    rc, text = _run(capsys, tmp_path / "x.pth", "-o", tmp_path / "out.pt")
    assert rc == 1 and needle in text and str(tmp_path / "x.pth") in text
    assert len(text.strip().splitlines()) == 1


def test_damaged_numbering_is_reported_not_guessed(tmp_path, capsys):
    sd = _srgan_sd(blocks=2)
    sd = {k.replace("res_blocks.1.", "res_blocks.3."): v for k, v in sd.items()}  # blocks 0 and 3
    torch.save(sd, tmp_path / "gap.pth")
    rc, text = _run(capsys, tmp_path / "gap.pth", "-o", tmp_path / "out.pt")
    assert rc == 1 and "numbered [0, 3]" in text and "damaged" in text


def test_list_names_every_family_and_its_keys(capsys):
    from srdeploy.train.families import FAMILIES

    rc, text = _run(capsys, "--list")
    assert rc == 0
    for fam in FAMILIES:
        assert f"{fam.name}: " in text
    assert "res_blocks.N.conv_block" in text and "ImageNet mean/std" in text
    assert "spandrel architectures tried, in order:" in text and "ESRGAN" in text and "SwinIR" in text


def _realesrgan_x2_sd() -> dict:
    import importlib

    import _foreign

    pytest.importorskip("spandrel")
    torch.manual_seed(0)
    esrgan = importlib.import_module("spandrel.architectures.ESRGAN").ESRGAN
    net = esrgan(in_nc=12, out_nc=3, num_filters=8, num_blocks=1, scale=4, shuffle_factor=2)
    return {k: v.contiguous() for k, v in _foreign.realesrgan_keys(net.state_dict()).items()}


def test_an_unrecognised_spandrel_layout_names_the_closest_architecture(tmp_path, capsys):
    sd = _realesrgan_x2_sd()
    sd.pop("conv_first.weight")  # spandrel no longer recognises it
    src = tmp_path / "RealESRGAN_x2plus_broken.pth"
    torch.save(sd, src)
    rc, text = _run(capsys, src, "-o", tmp_path / "out.pt")
    assert rc == 1 and not (tmp_path / "out.pt").exists()
    assert "closest: spandrel (Real-ESRGAN RRDBNet) (100% of the keys)" in text, text
    rc, listing = _run(capsys, "--list")
    assert rc == 0 and "Real-ESRGAN RRDBNet: conv_first, body, conv_body" in listing


def test_a_damaged_file_spandrel_recognises_is_one_line_naming_it(tmp_path, capsys):
    sd = _realesrgan_x2_sd()
    sd["conv_hr.weight"] = torch.zeros(3, 3, 3, 3)  # a tensor of the wrong shape
    src = tmp_path / "damaged.pth"
    torch.save(sd, src)
    rc, text = _run(capsys, src, "-o", tmp_path / "out.pt")
    lines = [line for line in text.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and not (tmp_path / "out.pt").exists(), text
    assert f"{src}: spandrel takes this for ESRGAN, but its tensors do not fit that architecture" in text
