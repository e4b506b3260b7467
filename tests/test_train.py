"""Training loops (issue 3): tiny models on small real crops, CPU only.

Models: SRResNet(num_blocks=1, channels=8), discriminator base 8, HR crops 16x16 (LR 4x4),
batch 2, a handful of steps. Images: 64x64 / 48x48 crops of Set5 written to a temp folder.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from srdeploy.train import batches, schedule, steps, trainer
from srdeploy.train.archs import SRResNet
from srdeploy.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from srdeploy.train.config import TrainConfig
from srdeploy.train.data import SRTrainDataset, load_rgb
from srdeploy.train.batches import TensorCropper
from srdeploy.train.distributed import DistInfo
from srdeploy.train.trainer import NonFiniteLossError, train_srgan, train_srresnet

TINY = {"scale": 4, "num_blocks": 1, "channels": 8}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The CI box has 2 cores shared with other jobs: several OpenMP threads per process
    # spin against each other and make these tiny steps ~20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory, set5: Path) -> dict:
    """Small real images: train/ (three 64x64 crops of Set5), val/ (two 48x48 crops)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for i, name in enumerate(["baby", "bird", "butterfly"]):
        img = load_rgb(set5 / f"{name}.png")
        Image.fromarray(img[40:104, 40:104]).save(root / "train" / f"{name}.png")
        if i < 2:
            Image.fromarray(img[100:148, 100:148]).save(root / "val" / f"{name}.png")
    return {"train": str(root / "train"), "val": str(root / "val")}


def tiny_cfg(images: dict, out: Path, **overrides) -> TrainConfig:
    values = dict(data=[images["train"]], val=[images["val"]], out=str(out), num_blocks=1, channels=8,
                  crop=16, batch_size=2, iters=6, lr=1e-3, val_every=3, save_every=3, log_every=1,
                  device="cpu", tensorboard=False, d_channels=8, vgg_layer="relu2_2")
    values.update(overrides)
    return TrainConfig(**values)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    import csv

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def state_equal(a: dict, b: dict) -> bool:
    """Nested state (state dicts, optimizer states) equal bitwise."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def srresnet_run(images, tmp_path_factory) -> Path:
    """One finished tiny SRResNet run with EMA (shared by the tests that only read it)."""
    out = tmp_path_factory.mktemp("runs") / "srresnet"
    train_srresnet(tiny_cfg(images, out, ema=0.5))
    return out


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory) -> Path:
    """A tiny SRResNet checkpoint to start SRGAN from."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("init") / "init.pt"
    save_checkpoint(path, SRResNet(**TINY), arch="SRResNet", kwargs=TINY)
    return path


def test_srresnet_reduces_loss_on_fixed_batch(images, tmp_path):
    # The fixed batch is the run's own first batch (items 0..3 of the crop stream).
    ds = SRTrainDataset(images["train"], crop=16, scale=4, seed=0)
    lr = torch.from_numpy(np.stack([ds[i][0] for i in range(4)]))
    hr = torch.from_numpy(np.stack([ds[i][1] for i in range(4)]))

    def loss_of(model):
        model.train()  # batch statistics, no output clamp: the loss the trainer minimises
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(lr), hr).item()

    torch.manual_seed(0)  # the trainer seeds the same way before building the model
    before = loss_of(SRResNet(**TINY))
    train_srresnet(tiny_cfg(images, tmp_path / "run", iters=12, batch_size=4, schedule="constant", val=[]))
    after = loss_of(model_from_checkpoint(tmp_path / "run" / "last.pt"))
    assert after < 0.5 * before, (before, after)


def test_srresnet_run_writes_checkpoints_metrics_settings(srresnet_run: Path):
    for name in ("last.pt", "best.pt", "metrics.csv", "settings.json"):
        assert (srresnet_run / name).is_file(), name
    columns, rows = read_csv(srresnet_run / "metrics.csv")
    assert columns == ["step", "loss", "lr", "its", "val_psnr", "val_ssim"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["val_psnr"] != "" for r in rows] == [False, False, True, False, False, True]
    assert all(np.isfinite(float(r["loss"])) for r in rows)

    last = load_checkpoint(srresnet_run / "last.pt")
    assert last["step"] == 6 and last["kind"] == "srresnet" and last["arch"] == "SRResNet"
    for key in ("arch", "kwargs", "state_dict", "ema_state_dict", "optimizer", "scheduler", "step",
                "best_psnr", "rng", "settings", "metrics", "versions"):
        assert key in last, key
    assert last["kwargs"] == TINY
    # The run changed the weights: they differ from the seeded initialisation.
    torch.manual_seed(0)
    init = SRResNet(**TINY).state_dict()
    assert not torch.equal(init["head.weight"], last["state_dict"]["head.weight"])

    settings = json.loads((srresnet_run / "settings.json").read_text())
    assert settings["kind"] == "srresnet" and settings["schedule"] == "cosine" and settings["ema"] == 0.5
    assert settings["resolved"]["precision"] == "fp32" and settings["resolved"]["world_size"] == 1
    assert TrainConfig.from_json(srresnet_run / "settings.json").iters == 6


def test_checkpoint_alone_rebuilds_the_validated_model(srresnet_run: Path, images, tmp_path, capsys):
    """`srdeploy eval best.pt` (model rebuilt from the file alone) reproduces training's validation."""
    from srdeploy.cli import main

    best = load_checkpoint(srresnet_run / "best.pt")
    report = tmp_path / "eval.json"
    assert main(["eval", str(srresnet_run / "best.pt"), images["val"], "--device", "cpu", "--json", str(report)]) == 0
    (result,) = json.loads(report.read_text())["sets"]
    # Validation ran the EMA weights; eval rebuilds them from ema_state_dict.
    assert result["psnr"] == pytest.approx(best["metrics"]["val_psnr"], abs=1e-3)
    assert result["ssim"] == pytest.approx(best["metrics"]["val_ssim"], abs=1e-4)

    a, b = model_from_checkpoint(srresnet_run / "last.pt"), model_from_checkpoint(srresnet_run / "last.pt")
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_resume_equals_uninterrupted_run(images, tmp_path):
    """N steps == N/2 steps + --resume N/2 (bitwise: weights, EMA, Adam state, scheduler)."""
    common = dict(iters=6, save_every=2, log_every=2, val_every=3, ema=0.5)
    train_srresnet(tiny_cfg(images, tmp_path / "full", **common))

    half = tmp_path / "half"
    train_srresnet(tiny_cfg(images, half, **common), stop_at=3)
    mid = load_checkpoint(half / "last.pt")
    assert mid["step"] == 3
    assert all(int(s["step"]) == 3 for s in mid["optimizer"]["state"].values())  # Adam's own step count
    # A run killed after logging step 4 but before its next checkpoint: that row must not repeat.
    with open(half / "metrics.csv", "a") as f:
        f.write("4,0.5,0.001,1.0,,\n")
    train_srresnet(tiny_cfg(images, half, resume=True, **common))

    full_ckpt, half_ckpt = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(half / "last.pt")
    assert half_ckpt["step"] == full_ckpt["step"] == 6
    for key in ("state_dict", "ema_state_dict", "optimizer", "scheduler"):
        assert state_equal(full_ckpt[key], half_ckpt[key]), key
    assert half_ckpt["best_psnr"] == full_ckpt["best_psnr"]
    _, rows = read_csv(half / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 3, 4, 6]
    assert [r["loss"] for r in rows[-2:]] == [r["loss"] for r in read_csv(tmp_path / "full" / "metrics.csv")[1][-2:]]


def test_fresh_start_refuses_an_existing_run(srresnet_run: Path, images):
    with pytest.raises(FileExistsError, match="--resume"):
        train_srresnet(tiny_cfg(images, srresnet_run))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_srresnet(tiny_cfg(images, srresnet_run.parent / "nothing-here", resume=True))


def test_interrupted_save_leaves_previous_checkpoint_intact(images, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def save_then_fail(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint: write part of it, then the "disk" fails
            f.write(b"PK\x03\x04 half a zip")
            raise OSError("simulated: no space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="simulated"):
        train_srresnet(tiny_cfg(images, out, iters=4, save_every=2, val=[]))
    monkeypatch.undo()
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["last.pt", "metrics.csv", "settings.json"]
    # And the run continues from it.
    train_srresnet(tiny_cfg(images, out, iters=4, save_every=2, val=[], resume=True))
    assert load_checkpoint(out / "last.pt")["step"] == 4


@pytest.mark.slow
def test_sigkill_during_training_keeps_a_loadable_checkpoint(images, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "srdeploy", "train", "srresnet", "--data", images["train"], "--out", str(out),
           "--iters", "100000", "--batch-size", "2", "--crop", "16", "--num-blocks", "1", "--channels", "8",
           "--save-every", "1", "--log-every", "1", "--device", "cpu", "--no-tensorboard"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").is_file():
            assert proc.poll() is None, "training exited early"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.1)
        time.sleep(1.0)  # saves every step: the kill very likely lands mid-save some of the time
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = load_checkpoint(out / "last.pt")  # complete and valid, whatever the kill interrupted
    step = int(ckpt["step"])
    assert step >= 1
    train_srresnet(tiny_cfg(images, out, iters=step + 2, save_every=1, val=[], resume=True))
    assert load_checkpoint(out / "last.pt")["step"] == step + 2
    assert not list(out.glob(".*.tmp"))  # a temp file left by the kill is cleaned up on resume


def test_nonfinite_loss_stops_with_message_and_keeps_last_good(images, tmp_path, monkeypatch, capsys):
    class NaNAfter(torch.nn.Module):
        """MSE for 3 steps, then NaN (as a diverging run would produce)."""

        calls = 0

        def forward(self, sr, hr):
            NaNAfter.calls += 1
            loss = torch.nn.functional.mse_loss(sr, hr)
            return loss * float("nan") if NaNAfter.calls > 3 else loss

    monkeypatch.setattr(steps, "pixel_loss", lambda kind: NaNAfter())
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite \(loss=nan\) at step 4.*last good checkpoint.*step 2"):
        train_srresnet(tiny_cfg(images, out, iters=8, save_every=2, val=[]))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())

    # The CLI prints the message (no traceback) and exits 1.
    from srdeploy.cli import main

    NaNAfter.calls = 0
    rc = main(["train", "srresnet", "--data", images["train"], "--out", str(tmp_path / "cli"), "--iters", "8",
               "--batch-size", "2", "--crop", "16", "--num-blocks", "1", "--channels", "8", "--save-every", "2",
               "--device", "cpu", "--no-tensorboard"])
    assert rc == 1
    assert "loss became non-finite" in capsys.readouterr().err


def test_srgan_trains_generator_and_discriminator(images, init_ckpt, tmp_path):
    # VGG19 with RANDOM weights, explicitly (vgg_weights="random"): tests never download and the
    # pretrained file is not available here; the content loss is then meaningless but exercised.
    out = tmp_path / "gan"
    cfg = tiny_cfg(images, out, init=str(init_ckpt), vgg_weights="random", iters=4, save_every=2, val_every=2,
                   num_blocks=16, channels=64)  # architecture comes from --init, not these
    train_srgan(cfg)
    last = load_checkpoint(out / "last.pt")
    assert last["arch"] == "SRResNet" and last["kwargs"] == TINY and last["kind"] == "srgan"
    init = load_checkpoint(init_ckpt)
    assert not torch.equal(init["state_dict"]["head.weight"], last["state_dict"]["head.weight"])
    assert last["discriminator"]["arch"] == "Discriminator"
    assert {"optimizer_d", "scheduler_d"} <= last.keys()

    # The generator of best.pt/last.pt rebuilds from the file alone (eval/export path).
    g = model_from_checkpoint(out / "best.pt")
    assert g(torch.rand(1, 3, 5, 6)).shape == (1, 3, 20, 24)

    columns, rows = read_csv(out / "metrics.csv")
    assert columns == ["step", "loss", "lr", "its", "g_pixel", "g_content", "g_adv", "d_loss", "d_real",
                       "d_fake", "val_psnr", "val_ssim"]
    assert all(r["g_pixel"] == "" and float(r["g_adv"]) > 0 and float(r["d_loss"]) > 0 for r in rows)
    # Generator loss = content + 1e-3 x adversarial (the paper's weights), per logged step.
    for r in rows:
        assert float(r["loss"]) == pytest.approx(float(r["g_content"]) + 1e-3 * float(r["g_adv"]), rel=1e-4)
        assert 0 < float(r["d_real"]) < 1 and 0 < float(r["d_fake"]) < 1
    # The discriminator took every step (Adam's count), and its weights moved from its seeded start.
    assert all(int(st["step"]) == 4 for st in last["optimizer_d"]["state"].values())
    assert last["scheduler_d"]["last_epoch"] == 4
    torch.manual_seed(0)  # the trainer seeds, builds the generator, then the discriminator
    SRResNet(**TINY)
    d0 = trainer.Discriminator(base_channels=8).state_dict()
    moved = [k for k, v in last["discriminator"]["state_dict"].items() if v.is_floating_point()
             and not torch.equal(v, d0[k])]
    assert "features.0.weight" in moved and len(moved) > len(d0) // 2, moved
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["schedule"], settings["adv_weight"], settings["content_weight"], settings["pixel_weight"]) == \
        ("step", 1e-3, 1.0, 0.0)
    assert settings["resolved"]["vgg_weights"] == "RANDOM (tests only)"
    # "step" schedule (paper): lr for the first half, x0.1 after (a row's lr is the next step's).
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-4, 1e-4, 1e-4])


def test_srgan_resume_equals_uninterrupted_run(images, init_ckpt, tmp_path):
    # VGG19 with RANDOM weights, explicitly (tests only; see above).
    common = dict(init=str(init_ckpt), vgg_weights="random", iters=4, save_every=2, val=[], pixel_weight=0.1)
    train_srgan(tiny_cfg(images, tmp_path / "full", **common))
    train_srgan(tiny_cfg(images, tmp_path / "half", **common), stop_at=2)
    train_srgan(tiny_cfg(images, tmp_path / "half", resume=True, **common))
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "half" / "last.pt")
    for key in ("state_dict", "optimizer", "scheduler", "discriminator", "optimizer_d", "scheduler_d"):
        assert state_equal(a[key], b[key]), key


def test_srgan_missing_vgg_weights_fails_before_training(images, init_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached VGG19 here
    out = tmp_path / "gan"
    with pytest.raises(FileNotFoundError, match=r"VGG19 weights not found.*--vgg-weights FILE"):
        train_srgan(tiny_cfg(images, out, init=str(init_ckpt)))
    assert not out.exists()  # nothing written, no step run

    from srdeploy.cli import main

    base = ["train", "srgan", "--init", str(init_ckpt), "--data", images["train"], "--out", str(out),
            "--crop", "16", "--device", "cpu"]
    assert main(base) == 1
    assert "srdeploy train srgan --vgg-weights FILE" in capsys.readouterr().err
    assert main(base + ["--vgg-weights", str(tmp_path / "vgg19.pth")]) == 1
    assert "vgg19.pth does not exist" in capsys.readouterr().err
    assert main(base + ["--vgg-weights", "random"]) == 1
    assert "not a weights file" in capsys.readouterr().err
    # A zero-byte or non-weights file: one line naming it, no traceback (issue 11 item 4).
    for content in (b"", b"<html>not weights</html>\n"):
        (tmp_path / "bad.pth").write_bytes(content)
        assert main(base + ["--vgg-weights", str(tmp_path / "bad.pth")]) == 1
        err = capsys.readouterr().err
        assert str(tmp_path / "bad.pth") in err and "VGG19 weights" in err, err
        assert "Traceback" not in err and "weights_only" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_srgan_requires_init(images, tmp_path):
    with pytest.raises(ValueError, match="--init CHECKPOINT is required"):
        train_srgan(tiny_cfg(images, tmp_path / "gan", vgg_weights="random"))  # random VGG: tests only


def test_tensor_cropper_cuts_the_dataset_crops(images):
    """The on-device data path (used on CUDA) gives the DataLoader path's batches; run here on CPU."""
    ds = SRTrainDataset(images["train"], crop=16, scale=4, seed=3)
    lr, hr = TensorCropper(ds, torch.device("cpu")).batch(list(range(10, 26)))
    ref_lr = np.stack([ds[i][0] for i in range(10, 26)])
    ref_hr = np.stack([ds[i][1] for i in range(10, 26)])
    assert hr.shape == (16, 3, 16, 16) and lr.shape == (16, 3, 4, 4)
    assert np.array_equal(hr.numpy(), ref_hr)
    diff = np.abs(lr.numpy() - ref_lr)
    assert diff.max() <= 1 / 255 + 1e-7 and (diff == 0).mean() > 0.99


def test_step_indices_give_each_rank_its_own_items():
    seen = [i for step in range(3) for rank in range(2) for i in batches.step_indices(step, 4, rank, 2)]
    assert sorted(seen) == list(range(24))


def test_cli_flags_fill_the_config():
    from srdeploy.cli import build_parser
    from srdeploy.train.train_cli import config_from_args

    args = build_parser().parse_args([
        "train", "srresnet", "--data", "a", "b", "--val", "v", "--out", "o", "--iters", "7", "--batch-size", "3",
        "--crop", "64", "--scale", "2", "--num-blocks", "4", "--channels", "32", "--lr", "0.002",
        "--val-every", "5", "--save-every", "6", "--seed", "9", "--device", "cpu", "--resume", "--loss", "l1"])
    cfg = config_from_args(args).resolved("srresnet")
    assert (cfg.data, cfg.val, cfg.out, cfg.iters, cfg.batch_size, cfg.crop, cfg.scale, cfg.num_blocks,
            cfg.channels, cfg.lr, cfg.val_every, cfg.save_every, cfg.seed, cfg.device, cfg.resume, cfg.loss) == \
        (["a", "b"], ["v"], "o", 7, 3, 64, 2, 4, 32, 0.002, 5, 6, 9, "cpu", True, "l1")
    assert (cfg.schedule, cfg.pixel_weight, cfg.adv_weight) == ("cosine", 1.0, 0.0)

    args = build_parser().parse_args([
        "train", "srgan", "--init", "runs/x/best.pt", "--data", "a", "--out", "g", "--vgg-weights", "vgg.pth",
        "--vgg-layer", "relu2_2", "--pixel-weight", "0.01", "--adv-weight", "0.002", "--content-weight", "0.5"])
    cfg = config_from_args(args).resolved("srgan")
    assert (cfg.kind, cfg.init, cfg.vgg_weights, cfg.vgg_layer, cfg.pixel_weight, cfg.adv_weight,
            cfg.content_weight, cfg.schedule, cfg.lr, cfg.d_lr, cfg.iters) == \
        ("srgan", "runs/x/best.pt", "vgg.pth", "relu2_2", 0.01, 0.002, 0.5, "step", 1e-4, 1e-4, 200_000)
    defaults = config_from_args(build_parser().parse_args(["train", "srgan", "--data", "a", "--out", "g"]))
    d = defaults.resolved("srgan")
    assert (d.content_weight, d.adv_weight, d.pixel_weight, d.vgg_layer, d.vgg_weights) == (1.0, 1e-3, 0.0, "relu5_4", None)


@pytest.mark.parametrize("overrides, message", [
    ({"adv_weight": 1e-3}, "belong to SRGAN"),
    ({"crop": 18}, "multiple of --scale"),
    ({"ema": 1.0}, "--ema"),
    ({"val": ["x/Set5", "y/Set5"]}, "different names"),
    ({"lr": float("nan")}, "--lr"),
])
def test_config_errors_name_the_flag(overrides, message, tmp_path):
    cfg = TrainConfig(data=["d"], out=str(tmp_path), **overrides).resolved("srresnet")
    with pytest.raises(ValueError, match=message):
        cfg.validate()


def test_precision_is_fp32_on_cpu():
    p = steps.resolve_precision(True, torch.device("cpu"))
    assert (p.name, p.dtype, p.scaler) == ("fp32", None, None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (AMP, channels_last, GPU crops)")
def test_cuda_amp_run(images, init_ckpt, tmp_path):
    out = tmp_path / "cuda"
    train_srresnet(tiny_cfg(images, out, device="cuda", iters=4, save_every=2, val_every=2))
    settings = json.loads((out / "settings.json").read_text())["resolved"]
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    assert (settings["precision"], settings["channels_last"], settings["data_path"]) == (expected, True, "gpu_crops")
    assert load_checkpoint(out / "last.pt")["precision"] == expected
    # VGG19 with RANDOM weights, explicitly (tests only).
    train_srgan(tiny_cfg(images, tmp_path / "gan", device="cuda", init=str(init_ckpt), vgg_weights="random",
                         iters=2, save_every=2, val=[]))
    ds = SRTrainDataset(images["train"], crop=16, scale=4, seed=0)
    lr, hr = TensorCropper(ds, torch.device("cuda")).batch([0, 1, 2])
    assert np.array_equal(hr.cpu().numpy(), np.stack([ds[i][1] for i in range(3)]))
    # --no-gpu-crops: the DataLoader path on CUDA, recorded.
    train_srresnet(tiny_cfg(images, tmp_path / "dl", device="cuda", iters=2, save_every=2, val=[], gpu_crops=False))
    assert json.loads((tmp_path / "dl" / "settings.json").read_text())["resolved"]["data_path"] == "dataloader(0 workers)"
    # --time-budget on CUDA: 3 untimed steps (cuDNN autotuning), then the plan.
    train_srresnet(tiny_cfg(images, tmp_path / "tb", device="cuda", iters=10**5, time_budget=3.0,
                            val_every=10**6, save_every=10**6, log_every=10**6))
    tb = json.loads((tmp_path / "tb" / "settings.json").read_text())["resolved"]["time_budget"]
    assert tb["planned_iters"] >= tb["actual_iters"] > tb["warmup_steps"] >= 3 + schedule.BUDGET_WARMUP_MIN_STEPS


def test_bench_train_script_runs_tiny(images, tmp_path, capsys):
    """scripts/bench_train.py stays runnable (tiny model; the real figures come from running it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train", Path(__file__).parent.parent / "scripts" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--data", images["train"], "--num-blocks", "1", "--channels", "8",
                       "--crop", "16", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--json", str(report)]) == 0
    (result,) = json.loads(report.read_text())["results"]
    assert result["its"] > 0 and result["precision"] == "fp32" and result["lr_crop"] == 4
    assert "it/s" in capsys.readouterr().out


# --- issue 11 item 3: --resume with changed optimisation settings ---------------------------------
def _row_lrs(path: Path) -> dict[int, float]:
    return {int(r["step"]): float(r["lr"]) for r in read_csv(path / "metrics.csv")[1]}


def test_resume_with_changed_lr_schedule_and_iters_applies_them_from_the_resumed_step(images, tmp_path, capsys):
    """A row's lr is the one the next step uses: base * factor(step) for the schedule in force."""
    out = tmp_path / "run"
    common = dict(val=[], save_every=3, log_every=1)
    train_srresnet(tiny_cfg(images, out, iters=6, lr=1e-3, **common), stop_at=3)
    assert _row_lrs(out)[3] == pytest.approx(1e-3 * schedule.lr_factor(tiny_cfg(images, out).resolved("srresnet"), 3))

    # New lr only: the cosine over 6 steps continues from step 3 with base 5e-3 (not 1e-3).
    train_srresnet(tiny_cfg(images, out, iters=6, lr=5e-3, resume=True, **common), stop_at=4)
    cosine6 = tiny_cfg(images, out, iters=6).resolved("srresnet")
    assert _row_lrs(out)[4] == pytest.approx(5e-3 * schedule.lr_factor(cosine6, 4), rel=1e-9)
    assert "lr: 0.001 -> 0.005" in capsys.readouterr().err
    # New schedule and iters too: "step" over 10 steps -> x1 before step 5, x0.1 from it.
    train_srresnet(tiny_cfg(images, out, iters=10, lr=5e-3, schedule="step", resume=True, **common))
    lrs = _row_lrs(out)
    assert [lrs[s] for s in (5, 6, 10)] == pytest.approx([5e-4, 5e-4, 5e-4], rel=1e-9)
    ckpt = load_checkpoint(out / "last.pt")
    # What is recorded is what was used.
    assert ckpt["scheduler"]["base_lrs"] == [5e-3]
    assert [g["initial_lr"] for g in ckpt["optimizer"]["param_groups"]] == [5e-3]
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["lr"], settings["schedule"], settings["iters"]) == (5e-3, "step", 10)
    assert ckpt["settings"]["lr"] == 5e-3


def test_resume_with_nothing_left_to_do_writes_nothing(srresnet_run: Path, images, capsys):
    before = {p.name: p.read_bytes() for p in srresnet_run.iterdir() if p.is_file()}
    result = train_srresnet(tiny_cfg(images, srresnet_run, ema=0.5, lr=0.01, resume=True))
    assert "nothing to do" in capsys.readouterr().err
    assert result["step"] == 6
    assert {p.name: p.read_bytes() for p in srresnet_run.iterdir() if p.is_file()} == before


def test_srgan_resume_with_new_lr_moves_the_discriminator_schedule_too(images, init_ckpt, tmp_path):
    common = dict(init=str(init_ckpt), vgg_weights="random", iters=4, save_every=2, val=[], content_weight=0.0)
    out = tmp_path / "gan"
    train_srgan(tiny_cfg(images, out, **common), stop_at=2)
    train_srgan(tiny_cfg(images, out, resume=True, lr=4e-3, **common))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["scheduler"]["base_lrs"] == [4e-3] and ckpt["scheduler_d"]["base_lrs"] == [4e-3]
    assert ckpt["settings"]["d_lr"] == 4e-3


# --- issue 11 item 14: the run's named steps, alone ----------------------------------------------
def _set_up_run(cfg: TrainConfig) -> "trainer._Run":
    run = trainer._Run(cfg.resolved(cfg.kind), DistInfo("cpu"))
    run.set_up()
    return run


def test_run_steps_set_up_one_step_validate_save_resume_alone(images, tmp_path):
    run = _set_up_run(tiny_cfg(images, tmp_path / "run", ema=0.5))
    assert (run.step, run.end, run.arch_kwargs) == (0, 6, TINY)
    assert not (tmp_path / "run").exists()  # set-up writes nothing
    lr, hr = next(iter(run.batches()))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    parts = run.one_step(lr, hr)
    assert run.step == 1 and parts["loss"].item() > 0
    assert not torch.equal(before["head.weight"], run.model.state_dict()["head.weight"])
    metrics = run.validate()
    assert set(metrics) == {"val_psnr", "val_ssim"} and 0 < metrics["val_ssim"] < 1
    run.save(tmp_path / "a.pt", {"step": 1})
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt["step"] == 1 and state_equal(ckpt["state_dict"], run.model.state_dict())

    other = _set_up_run(tiny_cfg(images, tmp_path / "other", ema=0.5))
    other.resume(ckpt)
    assert other.step == 1 and state_equal(other.optimizer.state_dict(), run.optimizer.state_dict())
    assert state_equal(other.ema.module.state_dict(), run.ema.module.state_dict())


# --- issue 16 item 1: --time-budget -----------------------------------------------------------------
def test_plan_iterations_counts_steps_validations_and_checkpoints():
    plan = schedule.plan_iterations
    common = dict(its=10.0, cap=10**6, val_every=100, save_every=50, val_s=1.0, save_s=0.5)
    # 10 s at 10 it/s, nothing else: 100 steps; with checkpoints (0.5 s) at step 50 and the end: 90.
    assert plan(step=0, remaining_s=10.0, **{**common, "save_s": 0.0}, validate=False) == 100
    assert plan(step=0, remaining_s=10.0, **common, validate=False) == 90
    # With a final validation (1 s + best.pt 0.5 s): 7.5 s + 2 checkpoints 1 s + 1.5 s = 10 s.
    assert plan(step=0, remaining_s=10.0, **common, validate=True) == 75
    # Crossing multiples: steps 1..150 in 15 s, saves at 50/100/150 (1.5 s), validations at 100/150 (3 s).
    assert plan(step=0, remaining_s=19.5, **common, validate=True) == 150
    assert plan(step=0, remaining_s=19.4, **common, validate=True) == 149
    assert plan(step=7, remaining_s=0.1, **common, validate=True) == 7  # nothing more fits
    assert plan(step=0, remaining_s=1e9, **common, validate=True) == 10**6  # --iters caps the plan


class _FakeClock:
    """Each reading is 0.01 s after the previous one: the budget logic runs the same on any machine."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.01
        return self.t


def test_time_budget_plans_iters_records_them_and_the_schedule_spans_the_plan(images, tmp_path, capsys,
                                                                              monkeypatch):
    """Not timed (a fake clock): what is recorded, and the schedule spans the plan."""
    monkeypatch.setattr(schedule, "now", _FakeClock())
    out = tmp_path / "run"
    train_srresnet(tiny_cfg(images, out, iters=100_000, time_budget=1.2, val_every=10**6, save_every=10**6,
                            log_every=10**6))
    settings = json.loads((out / "settings.json").read_text())
    tb = settings["resolved"]["time_budget"]
    planned, actual = tb["planned_iters"], tb["actual_iters"]
    assert settings["iters"] == planned and settings["time_budget"] == 1.2 and tb["iters_cap"] == 100_000
    # Warm-up: 1 untimed step on the CPU, then at least BUDGET_WARMUP_MIN_STEPS timed ones and 5% of 1.2 s.
    assert tb["warmup_steps"] >= 1 + schedule.BUDGET_WARMUP_MIN_STEPS and tb["its"] > 0
    assert 5 < planned == actual < 100 and tb["elapsed_s"] <= 1.2
    ckpt = load_checkpoint(out / "last.pt")
    assert (ckpt["step"], ckpt["planned_iters"], ckpt["settings"]["iters"]) == (actual, planned, planned)
    rows = read_csv(out / "metrics.csv")[1]
    # Rows: the warm-up's validation/checkpoint step and the last step, both validated.
    assert [int(r["step"]) for r in rows] == [tb["warmup_steps"], actual] and rows[-1]["val_psnr"] != ""
    plan_cfg = tiny_cfg(images, out, iters=planned).resolved("srresnet")
    assert float(rows[-1]["lr"]) == pytest.approx(1e-3 * schedule.lr_factor(plan_cfg, actual), rel=1e-9)
    if actual == planned:  # the cosine reached its end with the budget
        assert float(rows[-1]["lr"]) == pytest.approx(1e-3 * 0.01)
    assert f"-> {planned} iterations" in capsys.readouterr().err

    # --resume with a budget: more steps, the schedule re-planned over the new total from here.
    train_srresnet(tiny_cfg(images, out, iters=100_000, time_budget=1.5, resume=True, val_every=10**6,
                            save_every=10**6, log_every=1))
    tb2 = json.loads((out / "settings.json").read_text())["resolved"]["time_budget"]
    assert tb2["planned_iters"] == tb2["actual_iters"] > actual + tb2["warmup_steps"]
    assert "iters: " not in capsys.readouterr().err  # re-planned, not a change to note
    lrs = _row_lrs(out)
    again = tiny_cfg(images, out, iters=tb2["planned_iters"]).resolved("srresnet")
    step = tb2["actual_iters"]
    assert lrs[step] == pytest.approx(1e-3 * schedule.lr_factor(again, step), rel=1e-9)


def test_time_budget_flag_parses_durations():
    from srdeploy.cli import build_parser
    from srdeploy.train.config import parse_duration
    from srdeploy.train.train_cli import config_from_args

    assert [parse_duration(t) for t in ("90s", "8m", "2h", "45", "1.5m")] == [90, 480, 7200, 45, 90]
    for bad in ("soon", "-5s", "0", "8 minutes", ""):
        with pytest.raises(ValueError, match="e.g. 90s, 8m or 2h"):
            parse_duration(bad)
    args = build_parser().parse_args(["train", "srresnet", "--data", "a", "--out", "o", "--time-budget", "8m",
                                      "--init", "x.pt"])
    cfg = config_from_args(args)
    assert (cfg.time_budget, cfg.init) == (480.0, "x.pt")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "srresnet", "--data", "a", "--out", "o", "--time-budget", "soon"])


def test_srresnet_init_starts_from_the_checkpoint_weights(images, init_ckpt, tmp_path):
    out = tmp_path / "ft"
    train_srresnet(tiny_cfg(images, out, init=str(init_ckpt), iters=1, num_blocks=16, channels=64, val=[]))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["kwargs"] == TINY and ckpt["step"] == 1  # architecture from --init, fresh schedule
    init = load_checkpoint(init_ckpt)["state_dict"]
    # One Adam step of lr 1e-3 moves each weight by at most ~lr.
    diff = (ckpt["state_dict"]["head.weight"] - init["head.weight"]).abs().max().item()
    assert 0 < diff < 2e-3


# --- issue 19: documented constants and behaviour, pinned with literal values ---------------------
def test_documented_srgan_constants():
    from srdeploy.train.config import KIND_DEFAULTS
    from srdeploy.train.losses import ContentLoss, GeneratorLoss

    assert TrainConfig().vgg_rescale == 12.75
    assert KIND_DEFAULTS["srgan"] == {"schedule": "step", "pixel_weight": 0.0, "content_weight": 1.0, "adv_weight": 1e-3}
    assert KIND_DEFAULTS["srresnet"]["schedule"] == "cosine"
    d = TrainConfig().resolved("srgan")
    assert (d.vgg_rescale, d.adv_weight, d.content_weight, d.lr, d.vgg_layer) == (12.75, 1e-3, 1.0, 1e-4, "relu5_4")
    assert ContentLoss(torch.nn.Identity()).rescale == 12.75
    assert GeneratorLoss(pixel=None, content=ContentLoss(torch.nn.Identity())).adv_weight == 1e-3


def test_losses_equal_hand_values():
    from srdeploy.train.losses import ContentLoss, GeneratorLoss, gan_loss, pixel_loss

    sr = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    hr = torch.zeros_like(sr)
    assert pixel_loss("mse")(sr, hr).item() == pytest.approx((0 + 0.25 + 1 + 0.0625) / 4)  # 0.328125
    assert pixel_loss("l1")(sr, hr).item() == pytest.approx((0 + 0.5 + 1 + 0.25) / 4)  # 0.4375
    # Content: features divided by 12.75 before the MSE: identity "features" 12.75 apart -> 1.
    content = ContentLoss(torch.nn.Identity())
    assert content(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 12.75)).item() == pytest.approx(1.0)
    # BCE with logits 0 is ln 2 either way; the generator's adversarial term is weighted by 1e-3.
    zeros = torch.zeros(4, 1)
    assert gan_loss(zeros, real=True).item() == pytest.approx(math.log(2))
    assert gan_loss(torch.full((4, 1), 2.0), real=False).item() == pytest.approx(math.log(1 + math.e ** 2))
    loss = GeneratorLoss(pixel=pixel_loss("mse"), content=content, pixel_weight=0.5)
    total, parts = loss(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 12.75), zeros)
    assert parts["g_adv"].item() == pytest.approx(math.log(2)) and parts["g_content"].item() == pytest.approx(1.0)
    assert total.item() == pytest.approx(0.5 * 12.75 ** 2 + 1.0 + 1e-3 * math.log(2))


def test_ema_equals_a_hand_computation_after_k_steps():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    ema = steps.EMA(model, 0.9)
    expected = 1.0
    for k, value in enumerate([3.0, -1.0, 5.0], 1):
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(value)
            model[1].running_mean.fill_(k)
        ema.update(model)
        expected = 0.9 * expected + 0.1 * value  # 1.2, 0.98, 1.382
    assert expected == pytest.approx(1.382)
    for p in ema.module.parameters():
        assert torch.allclose(p, torch.full_like(p, 1.382), atol=1e-6)
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))  # buffers are copied


def test_schedules_give_these_learning_rates():
    def lrs(kind, at):
        cfg = TrainConfig(data=["d"], iters=100, schedule=kind, lr_min_ratio=0.01).resolved("srresnet")
        return [schedule.lr_factor(cfg, s) for s in at]

    assert lrs("cosine", [0, 25, 50, 75, 100]) == pytest.approx([1.0, 0.8550179, 0.505, 0.1549821, 0.01], abs=1e-7)
    assert lrs("step", [0, 49, 50, 99]) == [1.0, 1.0, 0.1, 0.1]
    assert lrs("constant", [0, 50, 100]) == [1.0, 1.0, 1.0]


def test_run_follows_its_cosine_schedule(srresnet_run: Path):
    """The run's own rows: lr after step s = 1e-3 * cosine(s / 6) (lr_min_ratio 0.01)."""
    expected = [1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / 6))) for s in range(1, 7)]
    assert [float(r["lr"]) for r in read_csv(srresnet_run / "metrics.csv")[1]] == pytest.approx(expected, rel=1e-9)
    # EMA on (0.5): the EMA weights differ from the raw weights after 6 steps.
    last = load_checkpoint(srresnet_run / "last.pt")
    assert not torch.equal(last["state_dict"]["head.weight"], last["ema_state_dict"]["head.weight"])


def _cli_run(images, out: Path, *extra: str) -> "trainer._Run":
    """A _Run set up from `srdeploy train ...` flags (the CLI -> config path)."""
    from srdeploy.cli import build_parser
    from srdeploy.train.train_cli import config_from_args

    args = build_parser().parse_args(["train", *extra, "--data", images["train"], "--out", str(out), "--crop", "16",
                                      "--batch-size", "2", "--device", "cpu", "--no-tensorboard", "--iters", "4"])
    return _set_up_run(config_from_args(args))


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_loss_flag_trains_with_that_loss(images, tmp_path, loss):
    run = _cli_run(images, tmp_path / "r", "srresnet", "--num-blocks", "1", "--channels", "8", "--loss", loss)
    lr, hr = next(iter(run.batches()))
    with torch.no_grad():
        sr = run.model(lr)
    fn = torch.nn.functional.l1_loss if loss == "l1" else torch.nn.functional.mse_loss
    assert run.one_step(lr, hr)["loss"].item() == pytest.approx(fn(sr, hr).item(), rel=1e-6)
    assert run.settings["loss"] == loss


@pytest.mark.parametrize("adv_weight", ["0.5", "0.002"])
def test_srgan_step_scales_adversarial_term_and_steps_the_discriminator(images, init_ckpt, tmp_path, adv_weight):
    run = _cli_run(images, tmp_path / "g", "srgan", "--init", str(init_ckpt), "--testing-random-vgg",
                   "--content-weight", "0", "--adv-weight", adv_weight, "--d-channels", "8")
    d_before = {k: v.clone() for k, v in run.disc.state_dict().items()}
    g_before = run.model.state_dict()["head.weight"].clone()
    lr, hr = next(iter(run.batches()))
    parts = run.one_step(lr, hr)
    # Only the adversarial term: the generator's loss is adv_weight x BCE(D(G(x)), real).
    assert parts["loss"].item() == pytest.approx(float(adv_weight) * parts["g_adv"].item(), rel=1e-6)
    assert parts["g_adv"].item() > 0.1
    # Both networks took a step.
    changed = [k for k, v in run.disc.state_dict().items() if v.is_floating_point() and not torch.equal(v, d_before[k])]
    assert any(k.endswith("weight") for k in changed), changed
    assert all(s["step"].item() == 1 for s in run.d_optimizer.state_dict()["state"].values())
    assert not torch.equal(g_before, run.model.state_dict()["head.weight"])
    # D's loss is BCE(D(hr), real) + BCE(D(sr), fake), and its outputs are probabilities.
    assert parts["d_loss"].item() > 0 and 0 < parts["d_real"].item() < 1 and 0 < parts["d_fake"].item() < 1


def test_no_gpu_crops_flag(images, tmp_path):
    run = _cli_run(images, tmp_path / "r", "srresnet", "--num-blocks", "1", "--channels", "8", "--no-gpu-crops")
    assert run.cfg.gpu_crops is False and run.resolved["data_path"] == "dataloader(0 workers)"
    assert isinstance(run.batches(), torch.utils.data.DataLoader)
    # On the CPU the DataLoader is used whatever the flag says, and settings.json says so.
    run = _cli_run(images, tmp_path / "r2", "srresnet", "--num-blocks", "1", "--channels", "8")
    assert run.cfg.gpu_crops is True and run.resolved["data_path"] == "dataloader(0 workers)"
