"""The README and docs/ as a newcomer meets them: the tour's commands run, the links lead somewhere.

The tour is the fenced block after the ``<!-- tour: ... -->`` marker in README.md. Every command in
it is run here, in order, in a temporary folder that holds what the README says the reader brings
(``photo.jpg``, ``clip.mp4``, ``photos/``, ``clips/``: small crops of real Set5/Set14 images and a
short synthetic clip; ``generator_199.pth``: a tiny PyTorch-GAN srgan generator saved as that codebase
saves it) and the repository's ``models/`` (the bundled model, read only). The command
is run exactly as written, with only the flags in ``SPEED_FLAGS`` appended (argparse keeps the last
value, so an appended ``--threads 1`` wins): they shrink the work, never change what is exercised.
The README's two set-up commands are not part of the tour and are not run here (CI runs the second).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TOUR_MARK = "<!-- tour:"

# Appended to a tour command by its subcommand: less work on a 2-core CI machine, same code paths.
SPEED_FLAGS: dict[str, list[str]] = {
    "upscale": ["--threads", "1", "-q"],
    "video": ["--threads", "1", "-q"],
    "batch": ["--threads-per-worker", "1", "-q"],
    "bench": ["--size", "32x32", "--warmup", "1", "--iters", "2", "--threads", "1", "-q"],
    "export": ["-q"],
    "verify": ["--max-images", "2", "-q"],
    "quantize": ["--calib-images", "8", "--crop", "32", "--val", "{set5}", "--threads", "2", "-q"],
}


def tour_commands() -> list[list[str]]:
    """The tour block's commands as argument lists (comments dropped), in README order."""
    text = README.read_text()
    assert TOUR_MARK in text, "README.md lost its tour marker (<!-- tour: ... -->) before the tour block"
    block = re.search(r"```bash\n(.*?)```", text[text.index(TOUR_MARK):], re.S)
    assert block, "no ```bash block after the tour marker"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


# ------------------------------------------------------------------ fast: the text itself
def test_readme_is_a_front_door_of_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200


def test_tour_covers_the_main_commands_and_each_parses():
    from srdeploy.cli import build_parser

    cmds = tour_commands()
    assert 6 <= len(cmds) <= 12, cmds
    assert all(c[0] == "srdeploy" for c in cmds), [c for c in cmds if c[0] != "srdeploy"]
    subs = {c[1] for c in cmds}
    assert {"upscale", "video", "batch", "bench", "export", "verify", "quantize", "import"} <= subs, subs
    parser = build_parser()
    for c in cmds:
        try:
            parser.parse_args(c[1:])
        except SystemExit as exc:  # argparse: unknown flag or bad value
            pytest.fail(f"README tour command does not parse (exit {exc.code}): {' '.join(c)}")


def test_readme_test_command_is_what_ci_runs():
    """The README's second set-up command and .ci/run's last line are the same command."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()][-1].strip()
    assert f"```bash\n{ci}\n```" in README.read_text(), ci


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _outside_code(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(page: Path) -> set[str]:
    """Every heading anchor of a page; a repeated heading gets -1, -2, ... as on GitHub."""
    anchors, counts = set(), {}
    for line in _outside_code(page.read_text()):
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            slug = _slug(m.group(1))
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading(page):
    bad = []
    for line in _outside_code(page.read_text()):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    assert not bad, f"{page.name}: " + "; ".join(bad)


def test_docs_index_lists_every_page():
    index = (DOCS / "index.md").read_text()
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "index.md" and f"]({p.name}" not in index]
    assert not missing, missing


# ------------------------------------------------------------------ slow: the tour, run
def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _clip(path: Path) -> Path:
    """A 6-frame 32x24 H.264 clip with a stereo AAC track (what `video` must keep)."""
    subprocess.run([_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=12:duration=0.5",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-ac", "2", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True, timeout=60)
    return path


def _video_facts(path: Path) -> tuple[int, int, int, bool]:
    """(frames, width, height, has audio) of a video file."""
    cap = cv2.VideoCapture(str(path))
    frames = 0
    w = h = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames += 1
        h, w = frame.shape[:2]
    cap.release()
    info = subprocess.run([_ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return frames, w, h, "Audio:" in info


def _pytorch_gan_generator(path: Path) -> Path:
    """A PyTorch-GAN srgan ``GeneratorResNet`` (x4, PReLU version; 1 residual block of 8 channels instead
    of 16 of 64, to stay fast) with random weights and non-trivial BatchNorm statistics, saved as its
    srgan.py does: ``torch.save(generator.state_dict(), "saved_models/generator_%d.pth" % epoch)``."""
    torch = pytest.importorskip("torch")
    from srdeploy.export.fuse import randomize_bn
    from srdeploy.train.foreign_archs import PyTorchGANGenerator

    torch.manual_seed(0)
    torch.save(randomize_bn(PyTorchGANGenerator(n_residual_blocks=1, channels=8)).state_dict(), path)
    return path


@pytest.fixture
def tour_folder(tmp_path, set5, set14) -> Path:
    """What the README's reader brings: photo.jpg, clip.mp4, photos/, clips/, generator_199.pth; and the
    repository's models/."""
    baby = cv2.imread(str(set5 / "baby.png"))
    cv2.imwrite(str(tmp_path / "photo.jpg"), baby[200:240, 180:228])                  # 48x40
    (tmp_path / "photos").mkdir()
    for i, f in enumerate(sorted(set14.glob("*.png"))[:2]):
        cv2.imwrite(str(tmp_path / "photos" / f"p{i}.png"), cv2.imread(str(f))[:24, :32])
    (tmp_path / "clips").mkdir()
    _clip(tmp_path / "clips" / "c.mp4")
    _clip(tmp_path / "clip.mp4")
    _pytorch_gan_generator(tmp_path / "generator_199.pth")
    (tmp_path / "models").symlink_to(ROOT / "models", target_is_directory=True)
    return tmp_path


def _check(cmd: list[str], d: Path, set5: Path) -> None:
    """What each tour command must have written (beyond exit status 0)."""
    from srdeploy.export.onnx_export import read_metadata

    sub, photo = cmd[1], cv2.imread(str(d / "photo.jpg"))
    if sub == "upscale":
        out = d / cmd[cmd.index("-o") + 1] / "photo.jpg"
        got = cv2.imread(str(out))
        assert got is not None and got.shape == (4 * photo.shape[0], 4 * photo.shape[1], 3), out
    elif sub == "video":
        src, dst = _video_facts(d / "clip.mp4"), _video_facts(d / cmd[cmd.index("-o") + 1])
        assert dst == (src[0], 4 * src[1], 4 * src[2], True), (src, dst)
    elif sub == "batch":
        outs = sorted(p for p in (d / cmd[cmd.index("-o") + 1]).rglob("*") if p.is_file() and ".srdeploy" not in str(p))
        assert sorted(p.suffix for p in outs) == [".mp4", ".png", ".png"], outs
    elif sub == "import":
        _check_import(d / cmd[2], d / cmd[cmd.index("-o") + 1])
    elif sub == "export":
        out = d / cmd[cmd.index("-o") + 1]
        assert read_metadata(out).scale == 4
        if read_metadata(out).arch == "PyTorch-GAN-SRGAN":
            _check_foreign_onnx(d / cmd[2], out)
    elif sub == "quantize":
        assert read_metadata(d / cmd[cmd.index("-o") + 1]).precision == "int8"


def _check_import(src: Path, out: Path) -> None:
    """``srdeploy import`` wrote a srdeploy checkpoint describing the PyTorch-GAN generator: its family,
    the kwargs read off the shapes, and the source file's sha256."""
    import hashlib

    from srdeploy.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(out)
    assert ckpt["arch"] == "PyTorch-GAN-SRGAN", ckpt["arch"]
    kw = ckpt["kwargs"]
    assert (kw["n_residual_blocks"], kw["channels"], kw["scale"], kw["activation"]) == (1, 8, 4, "prelu"), kw
    assert ckpt["import"]["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert ckpt["import"]["source"] == src.name


def _check_foreign_onnx(ckpt: Path, onnx_path: Path) -> None:
    """The generator exported from the imported checkpoint ``ckpt`` equals PyTorch-GAN's own forward
    (``tests/_foreign.py``) on the original weights file, under its data pipeline's conventions
    (ImageNet mean/std in, Tanh denormalised out; eps 0.8 BatchNorms folded), in FP32."""
    import _foreign
    import onnxruntime as ort
    import torch

    from srdeploy.train.checkpoint import load_checkpoint

    # the original's weights, read from the file the import names (not from the checkpoint it wrote)
    sd = torch.load(ckpt.parent / load_checkpoint(ckpt)["import"]["source"], weights_only=True)
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = _foreign.pytorch_gan(sd, x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == want.shape and want.std() > 0.01, (got.shape, want.shape, want.std())
    assert float(np.abs(got - want).max()) <= 1e-4, float(np.abs(got - want).max())


@pytest.mark.slow
def test_every_tour_command_runs_in_order(tour_folder, set5, data_root):
    for mod in ("ray", "openvino", "onnx", "torch"):
        pytest.importorskip(mod, reason=f"the README tour needs {mod} (the test command's extras)")
    env = {k: v for k, v in os.environ.items() if k not in ("SRDEPLOY_DEBUG", "SRDEPLOY_MODEL")}
    env.update(SRDEPLOY_DATA=str(data_root), PYTHONWARNINGS="ignore")
    for cmd in tour_commands():
        extra = [a.replace("{set5}", str(set5)) for a in SPEED_FLAGS.get(cmd[1], [])]
        proc = subprocess.run([sys.executable, "-m", "srdeploy", *cmd[1:], *extra], cwd=tour_folder, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} -> exit {proc.returncode}\n{proc.stderr[-3000:]}"
        _check(cmd, tour_folder, set5)
    # the INT8 model on OpenVINO stays close to the FP32 model on ONNX Runtime (JPEG on both sides)
    fp32 = cv2.imread(str(tour_folder / "out" / "photo.jpg")).astype(np.float32)
    int8 = cv2.imread(str(tour_folder / "out_int8" / "photo.jpg")).astype(np.float32)
    assert 0 < np.abs(fp32 - int8).mean() < 4, np.abs(fp32 - int8).mean()
