"""Training schedules and pinned behaviour (issues 11, 16, 19): --resume with changed settings, the
run's named steps alone, --time-budget, --init, and the documented constants (losses, EMA, schedules,
the SRGAN step), on the tiny models of ``_train.py``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from srdeploy.train import batches, schedule, steps, trainer
from srdeploy.train.checkpoint import load_checkpoint
from srdeploy.train.config import TrainConfig
from srdeploy.train.distributed import DistInfo
from srdeploy.train.trainer import train_srgan, train_srresnet

from _train import TINY, _one_thread, images, init_ckpt, read_csv, srresnet_run, state_equal, tiny_cfg  # noqa: F401


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
