"""Training loops (issue 3): tiny models on small real crops, CPU only (fixtures in ``_train.py``).

The schedules, the time budget, --resume with changed settings and the documented constants are in
``test_train_schedule.py``.
"""

from __future__ import annotations

import json
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
from srdeploy.train.checkpoint import load_checkpoint, model_from_checkpoint
from srdeploy.train.config import TrainConfig
from srdeploy.train.data import SRTrainDataset
from srdeploy.train.batches import TensorCropper
from srdeploy.train.trainer import NonFiniteLossError, train_srgan, train_srresnet

from _train import TINY, _one_thread, images, init_ckpt, read_csv, srresnet_run, state_equal, tiny_cfg  # noqa: F401


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
