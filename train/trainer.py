"""Training runs: SRResNet with a pixel loss, SRGAN with a perceptual (VGG + adversarial) loss.

``train_srresnet`` / ``train_srgan`` run ``_Run``: one invocation in named steps (``set_up``:
checks that can fail early, start state, architecture, models and optimisers, ``resume``; then
``train``: ``one_step`` in a loop with ``validate`` and ``save`` at their intervals, and ``plan``
after the warm-up of a time-budgeted run). The rooms it uses:

- ``distributed``: the device and the ``torchrun`` process group (``DistInfo``);
- ``batches``: which items each step of each rank takes, on the CPU or cut on the device;
- ``steps``: precision, EMA and the step functions of the two kinds (``SRResNetStep``, ``SRGANStep``);
- ``schedule``: the learning-rate schedules and the ``--time-budget`` planner (``TimeBudget``);
- ``run_files``: the run folder (start state, settings.json, metrics.csv, RNG state).

Guarantees:
- Crop ``i`` of a run is a function of ``(seed, i)`` and step ``s`` uses items
  ``(s * world + rank) * batch ...``: a resumed run sees exactly the data it would have seen,
  with no data RNG state to save. On CPU, N steps == N/2 steps + ``--resume`` N/2 bitwise.
- Checkpoints are written atomically (temporary file + rename) by rank 0 only, after checking
  that the weights are finite; a killed run leaves the previous ``last.pt`` intact.
- A NaN/inf loss stops training with ``NonFiniteLossError``; the last good checkpoint is kept.
- Under ``torchrun`` every rank takes its own slice of the crop stream; rank 0 validates and
  writes while the others wait at a barrier (no collective runs during validation).
- ``--resume`` with changed optimisation settings (lr, schedule, iters, ...) applies them from
  the resumed step: the schedule continues from that step with the new values, and
  settings.json records what is used. A resume with nothing left to do writes nothing.
- ``--time-budget``: it/s is measured after a warm-up, then the iterations are planned so that
  the run with its validations and final checkpoint ends within the budget; the schedule spans
  the plan. settings.json records the plan (``iters``, ``resolved.time_budget``) and the steps
  actually run; a run slower than measured stops early (recorded) rather than overrun.
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from . import schedule
from .archs import Discriminator, SRResNet, VGGFeatures
from .batches import step_batches
from .checkpoint import library_versions, save_checkpoint
from .config import TrainConfig
from .data import SRTrainDataset, list_images
from .distributed import DistInfo
from .evaluate import validate
from .progress import progress_bar
from .run_files import (BASE_COLUMNS, append_csv, open_tensorboard, prepare_run_folder, read_start_state, rng_state,
                        set_rng_state, settings_changes, write_json_atomic)
from .schedule import BUDGET_UNTIMED_STEPS, TimeBudget, apply_lr, lr_factor
from .steps import EMA, NonFiniteLossError, SRGANStep, SRResNetStep, all_finite, resolve_precision, to_device

# On CUDA, reading the loss back every step would stall the GPU queue; the loss is summed on the
# device and checked every few steps (and at every log / validation / checkpoint step).
SYNC_EVERY_CUDA = 10


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Due(NamedTuple):
    """What is due after a step."""

    val: bool
    save: bool
    log: bool


def train_srresnet(cfg: TrainConfig, *, stop_at: int | None = None, clock: float | None = None) -> dict:
    """Train the SRResNet generator with a pixel loss (MSE as the paper, or L1).

    Args:
        cfg: settings; fields left at None take the srresnet defaults.
        stop_at: stop this invocation after this step (writing ``last.pt``), as a time-limited
            job would; ``--resume`` continues. The schedule still spans ``cfg.iters``.
        clock: ``schedule.now()`` value from which ``cfg.time_budget`` counts (default:
            now; the CLI passes the process start).

    Returns:
        The last metrics row (step, loss, lr, its, and validation PSNR/SSIM when computed).
    """
    return _train(cfg.resolved("srresnet"), stop_at, clock)


def train_srgan(cfg: TrainConfig, *, stop_at: int | None = None, clock: float | None = None) -> dict:
    """Train SRGAN from a trained SRResNet (``cfg.init``) with the perceptual loss.

    Generator loss: ``content_weight * MSE(VGG(sr)/12.75, VGG(hr)/12.75) + adv_weight *
    BCEWithLogits(D(sr), real) + pixel_weight * pixel(sr, hr)``; discriminator:
    ``BCEWithLogits(D(hr), real) + BCEWithLogits(D(sr), fake)``; Adam (0.9, 0.999), lr 1e-4 then
    x0.1 for the second half by default. VGG19 weights must be available (``cfg.vgg_weights``
    or torchvision's cache): otherwise this fails before anything is written.

    Args:
        cfg: settings; fields left at None take the srgan defaults. The generator architecture
            comes from ``cfg.init`` (or from ``last.pt`` when resuming).
        stop_at, clock: as for ``train_srresnet``.

    Returns:
        The last metrics row.
    """
    return _train(cfg.resolved("srgan"), stop_at, clock)


def _train(cfg: TrainConfig, stop_at: int | None, clock: float | None = None) -> dict:
    clock = schedule.now() if clock is None else clock  # --time-budget counts from here
    cfg.validate()
    dist_info = DistInfo(cfg.device)
    try:
        run = _Run(cfg, dist_info, stop_at=stop_at, clock=clock)
        run.set_up()
        return run.train()
    finally:
        dist_info.close()


# --- One training run, in named steps -------------------------------------------------------------
class _Run:
    """One invocation of the trainer, in named steps that can be read (and tested) alone.

    ``set_up`` (checks, start state, architecture, models and optimisers, ``resume``, data, run
    folder), then ``train``: a loop of ``one_step``, with ``validate`` and ``save`` at their
    intervals (and, with ``--time-budget``, ``plan`` after the warm-up).

    Args:
        cfg: resolved settings (``TrainConfig.resolved``).
        dist_info: rank / world size / device.
        stop_at: stop this invocation after this step (the schedule still spans ``cfg.iters``).
        clock: ``schedule.now()`` when the invocation started (``--time-budget`` counts from it).
    """

    def __init__(self, cfg: TrainConfig, dist_info: DistInfo, *, stop_at: int | None = None,
                 clock: float | None = None):
        self.cfg, self.dist, self.stop_at = cfg, dist_info, stop_at
        self.device, self.main = dist_info.device, dist_info.is_main
        self.out = Path(cfg.out)
        self.clock = schedule.now() if clock is None else clock
        self.budget: TimeBudget | None = None
        self.step = self.start_step = 0
        self.best_psnr, self.last_saved = -math.inf, None
        self.metrics: dict = {}
        self.ckpt = self.init = None
        self.bar = self.tb = None

    # --- set-up ---------------------------------------------------------------------------------
    def set_up(self) -> None:
        """Everything before the first step: fails cheaply (before any write) when it must."""
        self.check_inputs()
        start = self.dist.from_rank0(lambda: read_start_state(self.cfg, self.out))
        self.ckpt, self.init = start.get("resume"), start.get("init")
        self.choose_architecture()
        self.build_models()
        if self.ckpt is not None:
            self.resume(self.ckpt)
        self.wrap_and_bind()
        if self.cfg.time_budget is not None:
            self.budget = TimeBudget(self.cfg.time_budget, self.clock, cap=self.cfg.iters,
                                     untimed=BUDGET_UNTIMED_STEPS.get(self.device.type, 1))
        self.end = self.cfg.iters if self.stop_at is None else min(self.cfg.iters, int(self.stop_at))
        if self.budget is not None:
            self.use_provisional_schedule()
        self.make_settings()

    def check_inputs(self) -> None:
        """Image folders and VGG weights: errors here come before a file is written or a step run."""
        cfg = self.cfg
        for folder in cfg.data + cfg.val:
            list_images(folder)
        self.vgg = None
        if cfg.kind == "srgan" and cfg.content_weight:
            # Raises VGGFeatures' message (how to supply the weights) when they are missing. Seeded
            # so that random test weights are the same on every rank and in a resumed run.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                self.vgg = VGGFeatures(layer=cfg.vgg_layer, weights=cfg.vgg_weights)
            if cfg.vgg_weights == "random" and self.main:
                _log("train srgan: WARNING: VGG19 has RANDOM weights (vgg_weights='random', meant for tests): "
                     "the content loss is meaningless for real training")

    def choose_architecture(self) -> None:
        """srresnet: from the flags (or --init); srgan: from --init; a resume: from last.pt."""
        cfg, ckpt, init = self.cfg, self.ckpt, self.init
        requested = {"scale": cfg.scale, "num_blocks": cfg.num_blocks, "channels": cfg.channels}
        if ckpt is not None or init is not None:
            self.arch_kwargs = dict((ckpt or init)["kwargs"])
        else:
            self.arch_kwargs = dict(requested)
        # srresnet takes its architecture from the flags unless it started from --init.
        from_file = cfg.kind == "srgan" or init is not None or bool((ckpt or {}).get("settings", {}).get("init"))
        if not from_file and ckpt is not None and any(self.arch_kwargs.get(k) != v for k, v in requested.items()):
            raise ValueError(f"train: {self.out / 'last.pt'} holds SRResNet({self.arch_kwargs}), not the requested "
                             f"{requested}; resume with the run's --scale/--num-blocks/--channels")
        if from_file:
            if self.main:
                _log(f"train {cfg.kind}: generator SRResNet({self.arch_kwargs}) from "
                     f"{self.out / 'last.pt' if ckpt is not None else cfg.init}")
            self.cfg = replace(cfg, **{k: self.arch_kwargs.get(k, v) for k, v in requested.items()})
            self.cfg.validate()  # crop vs the checkpoint's scale
        if ckpt is not None:
            # A resume continues the run's own start: its --init (never reloaded) stays recorded.
            old_init = ckpt.get("settings", {}).get("init")
            if self.cfg.init != old_init:
                if self.cfg.init and self.main:
                    _log(f"train: note: --init {self.cfg.init} is not used when resuming (the run started "
                         f"from {old_init})")
                self.cfg = replace(self.cfg, init=old_init)

    def build_models(self) -> None:
        """Generator, optimiser, schedule, precision; SRGAN's discriminator; EMA."""
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        self.model = SRResNet(**self.arch_kwargs)
        if self.init is not None and self.ckpt is None:
            self.model.load_state_dict(self.init["state_dict"])
        self.channels_last = cfg.channels_last and device.type == "cuda"
        self.memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model.to(device, memory_format=self.memory_format)
        # The schedules read self.cfg when called, so a plan (--time-budget) or a resume with new
        # settings changes them from the next step on.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(self.cfg, s))
        self.precision = resolve_precision(cfg.amp, device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels
        self.disc = self.d_optimizer = self.d_scheduler = None
        if cfg.kind == "srgan" and cfg.adv_weight:
            d_kwargs = {"base_channels": cfg.d_channels}
            if self.ckpt is not None and "discriminator" in self.ckpt:  # resume: the saved D's shape wins
                d_kwargs = dict(self.ckpt["discriminator"]["kwargs"])
                if d_kwargs.get("base_channels", cfg.d_channels) != cfg.d_channels:
                    if self.main:
                        _log(f"train srgan: note: --d-channels {cfg.d_channels} is not used when resuming: "
                             f"the saved discriminator has {d_kwargs['base_channels']}")
                    self.cfg = cfg = replace(cfg, d_channels=int(d_kwargs["base_channels"]))
            self.disc = Discriminator(**d_kwargs).to(device, memory_format=self.memory_format)
            self.d_optimizer = torch.optim.Adam(self.disc.parameters(), lr=cfg.d_lr, betas=(0.9, 0.999))
            self.d_scheduler = torch.optim.lr_scheduler.LambdaLR(self.d_optimizer, lambda s: lr_factor(self.cfg, s))
        if self.vgg is not None:
            self.vgg.to(device, memory_format=self.memory_format)
        self.ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None

    # --- resume ---------------------------------------------------------------------------------
    def resume(self, ckpt: dict) -> None:
        """Restore weights, optimiser, schedule position, EMA, scaler and RNG from ``ckpt``.

        Optimisation settings given now (lr, d_lr, schedule, lr_min_ratio, iters) apply from the
        resumed step: the schedule continues from that step with the new values (the restored
        scheduler would otherwise keep the old base learning rate).
        """
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.start_step = self.step = self.last_saved = int(ckpt["step"])
        self.best_psnr = float(ckpt.get("best_psnr", -math.inf))
        if self.precision.scaler is not None and ckpt.get("scaler"):
            self.precision.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt.get("rng", {}))
        if self.ema is not None and ckpt.get("ema_state_dict"):
            self.ema.module.load_state_dict(ckpt["ema_state_dict"])
        elif ckpt.get("ema_state_dict") and self.main:
            _log("train: note: the checkpoint has EMA weights but --ema is 0; they are dropped")
        self._resume_discriminator(ckpt)
        self.apply_schedule()

    def _resume_discriminator(self, ckpt: dict) -> None:
        if self.disc is None:
            return
        if "discriminator" not in ckpt:
            _log("train srgan: note: the checkpoint has no discriminator; starting a fresh one")
            return
        self.disc.load_state_dict(ckpt["discriminator"]["state_dict"])
        self.d_optimizer.load_state_dict(ckpt["optimizer_d"])
        self.d_scheduler.load_state_dict(ckpt["scheduler_d"])

    def apply_schedule(self) -> None:
        """Set every learning rate to ``base * lr_factor(cfg, step)`` for the current cfg and step."""
        apply_lr(self.scheduler, self.cfg.lr, self.cfg)
        if self.d_scheduler is not None:
            apply_lr(self.d_scheduler, self.cfg.d_lr, self.cfg)

    def use_provisional_schedule(self) -> None:
        """Before the --time-budget plan: a schedule long enough that its warm-up steps sit at its start.

        A resumed run guesses its plan from the it/s its checkpoint recorded (the warm-up is a few
        percent of the budget, so the guess only matters for those steps).
        """
        its = (self.ckpt or {}).get("metrics", {}).get("its") if self.ckpt is not None else None
        guess = self.step + max(1, round(float(its) * self.budget.seconds)) if its else 10**9
        self.cfg = replace(self.cfg, iters=guess)
        self.apply_schedule()

    def wrap_and_bind(self) -> None:
        """DDP wrappers (torchrun) and the step function of the kind."""
        self.g_train, self.d_train = self.model, self.disc
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_train = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            if self.disc is not None:
                self.d_train = nn.parallel.DistributedDataParallel(self.disc, device_ids=ids)
        common = dict(cfg=self.cfg, g_train=self.g_train, model=self.model, optimizer=self.optimizer,
                      scheduler=self.scheduler, ema=self.ema, precision=self.precision)
        if self.cfg.kind == "srgan":
            self.step_fn = SRGANStep(**common, vgg=self.vgg, disc=self.disc, d_train=self.d_train,
                                     d_optimizer=self.d_optimizer, d_scheduler=self.d_scheduler)
        else:
            self.step_fn = SRResNetStep(**common)
        self.names = ["loss"] + list(self.step_fn.parts)

    def make_settings(self) -> None:
        """What settings.json and the checkpoints record: the values used, not only those asked for."""
        cfg = self.cfg
        self.gpu_crops = self.device.type == "cuda" and cfg.gpu_crops
        self.resolved = {
            "device": str(self.device), "precision": self.precision.name, "precision_note": self.precision.note,
            "channels_last": self.channels_last,
            "data_path": "gpu_crops" if self.gpu_crops else f"dataloader({cfg.workers} workers)",
            "world_size": self.dist.world, "global_batch_size": cfg.batch_size * self.dist.world,
            "start_step": self.start_step, "generator": {"arch": "SRResNet", "kwargs": self.arch_kwargs},
            "vgg_weights": ("RANDOM (tests only)" if cfg.vgg_weights == "random"
                            else cfg.vgg_weights or "torchvision cache") if self.vgg is not None else None,
            "init_weights": self.init["source"] if self.init is not None and self.ckpt is None else None,
            "versions": library_versions(),
        }
        # Under --time-budget "iters" is recorded once planned (until then it is the cap).
        self.settings = {**cfg.to_dict(), "resolved": self.resolved}
        if self.budget is not None:
            self.settings["iters"] = self.budget.cap
            self.resolved["time_budget"] = {"budget_s": self.budget.seconds, "iters_cap": self.budget.cap,
                                            "planned_iters": None, "actual_iters": None}

    def open_run_folder(self) -> None:
        """Rank 0: settings.json, metrics.csv cut back to the start step, TensorBoard, the first line."""
        cfg, out = self.cfg, self.out
        self.columns = BASE_COLUMNS + list(self.step_fn.parts) + [
            f"{Path(v).name}_{m}" for v in cfg.val for m in ("psnr", "ssim")]
        if not self.main:
            return
        if self.ckpt is not None:
            changes = settings_changes(self.ckpt.get("settings", {}), self.settings)
            if self.budget is not None:  # iters is re-planned (logged with the plan), not a change
                changes = [c for c in changes if not c.startswith("iters: ")]
            if changes:
                _log(f"train: note: resuming with changed settings, applied from step {self.start_step}: "
                     + "; ".join(changes))
        self.columns = prepare_run_folder(out, self.settings, self.columns, self.start_step)
        self.tb = open_tensorboard(out, self.start_step) if cfg.tensorboard else None
        budget = f", time budget {self.budget.seconds:g} s (iters planned after a warm-up)" if self.budget else ""
        _log(f"train {cfg.kind}: {self.dist.world} process(es) on {self.device}, precision {self.precision.name} "
             f"({self.precision.note}), steps {self.start_step}..{self.end} of {self.settings['iters']}{budget}, "
             f"out {out}")

    def batches(self):
        """(lr, hr) batches from the start step on; item i of the run is crop i, whichever path cuts it."""
        cfg = self.cfg
        dataset = SRTrainDataset(cfg.data, crop=cfg.crop, scale=cfg.scale, seed=cfg.seed)
        # A --time-budget plan may shrink self.end while the batches are drawn.
        return step_batches(dataset, start=self.start_step, end=lambda: self.end, batch_size=cfg.batch_size,
                            rank=self.dist.rank, world=self.dist.world, device=self.device,
                            on_device=self.gpu_crops, workers=cfg.workers)

    # --- one step, validate, save ---------------------------------------------------------------
    def one_step(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Move a batch to the device and run one optimisation step; returns the loss parts."""
        lr_batch = to_device(lr_batch, self.device, self.channels_last)
        hr_batch = to_device(hr_batch, self.device, self.channels_last)
        parts = self.step_fn(lr_batch, hr_batch)
        self.step += 1
        return parts

    def validate(self) -> dict:
        """PSNR/SSIM of the deployed weights (EMA when on) on the --val folders (rank 0)."""
        eval_model = self.ema.module if self.ema is not None else self.model
        return validate(eval_model, self.cfg.val, self.cfg.scale, self.device)

    def save(self, path: Path, metrics: dict) -> None:
        """Write a checkpoint of the current step (rank 0; atomic)."""
        save_checkpoint(
            path, self.model, arch="SRResNet", kwargs=self.arch_kwargs,
            ema=self.ema.module if self.ema is not None else None,
            kind=self.cfg.kind, step=self.step, optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.precision.scaler.state_dict() if self.precision.scaler is not None else None,
            best_psnr=self.best_psnr, metrics=metrics, settings=self.settings, rng=rng_state(),
            precision=self.precision.name, world_size=self.dist.world, planned_iters=self.cfg.iters,
            **self.step_fn.state(),
        )

    def check_finite(self, means: list[float], checked: int) -> None:
        if all(math.isfinite(v) for v in means):
            return
        step, cfg = self.step, self.cfg
        where = f"at step {step}" if step == checked + 1 else f"between steps {checked + 1} and {step}"
        kept = (f"The last good checkpoint {self.out / 'last.pt'} (step {self.last_saved}) is kept"
                if self.last_saved is not None else "No checkpoint was written yet")
        bad = ", ".join(f"{n}={v}" for n, v in zip(self.names, means) if not math.isfinite(v))
        raise NonFiniteLossError(
            f"train {cfg.kind}: loss became non-finite ({bad}) {where}; stopped. {kept}. Lower --lr "
            f"(or try --no-amp) and continue with --resume.")

    def check_weights(self) -> None:
        """Before validating or saving: BN statistics averaged over ranks, weights finite."""
        # BN running statistics are per rank under DDP (it broadcasts rank 0's at each forward,
        # then each rank updates them on its own shard): average them so validation and the
        # checkpoint use every rank's data, and every rank holds the same model afterwards.
        self.dist.average_buffers(self.model, self.disc, self.ema.module if self.ema is not None else None)
        # Adam can turn a finite loss with overflowing gradients into non-finite weights:
        # never write those (every rank checks its identical copy, so all stop together).
        if not all_finite(self.model, self.disc):
            raise NonFiniteLossError(
                f"train {self.cfg.kind}: weights became non-finite at step {self.step}; stopped before saving. "
                f"The last good checkpoint {self.out / 'last.pt'} (step {self.last_saved}) is kept: lower --lr "
                "and continue with --resume.")

    # --- time budget ----------------------------------------------------------------------------
    def plan(self, val_s: float, save_s: float) -> None:
        """After the warm-up: the iterations that fit in the budget; the schedule spans them."""
        budget, cfg = self.budget, self.cfg

        def make_plan():
            return budget.make_plan(cfg, step=self.step, start_step=self.start_step, val_s=val_s, save_s=save_s)

        plan = self.dist.from_rank0(make_plan)  # every rank follows rank 0's measurement
        budget.plan = plan
        planned = plan["planned_iters"]
        self.cfg = replace(self.cfg, iters=planned)
        self.end = planned if self.stop_at is None else min(planned, int(self.stop_at))
        self.apply_schedule()
        self.settings["iters"] = planned
        self.resolved["time_budget"].update(plan)
        if self.bar is not None:
            self.bar.total = planned
            self.bar.refresh()
        if self.main:
            write_json_atomic(self.out / "settings.json", self.settings)
            left = planned - self.step
            _log(f"train {cfg.kind}: time budget {budget.seconds:g} s: {plan['its']:.3f} it/s after "
                 f"{plan['warmup_steps']} warm-up steps, validation {val_s:.2f} s, checkpoint {save_s:.2f} s -> "
                 f"{planned} iterations ({left} more)" + ("; the budget allows no more steps" if left <= 0 else ""))

    def finish_budget(self) -> None:
        if self.budget is None or not self.main:
            return
        tb = self.resolved["time_budget"]
        tb.update({"actual_iters": self.step, "elapsed_s": round(self.budget.elapsed(), 3)})
        write_json_atomic(self.out / "settings.json", self.settings)
        if self.budget.plan is not None and self.step < tb["planned_iters"]:
            _log(f"train {self.cfg.kind}: stopped at step {self.step} of the planned {tb['planned_iters']} "
                 "to stay within --time-budget (the machine got slower than measured)")

    # --- the loop -------------------------------------------------------------------------------
    def train(self) -> dict:
        """Run the steps from the start step to the end; returns the last metrics row."""
        cfg = self.cfg
        if self.start_step >= self.end:
            # Nothing to do: no file is touched (settings.json keeps what the run used).
            if self.main:
                _log(f"train {cfg.kind}: already at step {self.start_step} (iters {cfg.iters}); nothing to do")
            return dict(self.ckpt.get("metrics", {})) if self.ckpt is not None else {}
        self.open_run_folder()
        self.dist.barrier()
        if self.main:
            self.bar = progress_bar(total=self.settings["iters"], initial=self.start_step, desc=f"train {cfg.kind}",
                                    mininterval=1.0, enabled=cfg.progress)
        try:
            self._loop()
            self.finish_budget()
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.tb is not None:
                self.tb.close()
        return self.metrics

    def _loop(self) -> None:
        """The steps, each followed by what is due at it (loss check, row, validation, checkpoint, plan)."""
        device, budget = self.device, self.budget
        sync_every = 1 if device.type == "cpu" else SYNC_EVERY_CUDA
        self.model.train()
        checked = self.step
        acc, acc_n, means = None, 0, None
        since = (schedule.now(), self.step)  # time and step of the last metrics row (its it/s)
        warming_up = budget is not None
        final_s = 0.0  # --time-budget: measured cost of the final validation + checkpoint
        for lr_batch, hr_batch in self.batches():
            if self.step >= self.end:  # a plan shortened the run (DataLoader batches prefetched)
                break
            parts = self.one_step(lr_batch, hr_batch)
            step = self.step
            vec = torch.stack([parts[n].float() if n in parts else torch.zeros((), device=device)
                               for n in self.names])
            acc, acc_n = (vec if acc is None else acc + vec), acc_n + 1

            planning = False
            if warming_up:
                planning = self._warmup_done(step)
                warming_up = not planning
            elif budget is not None and budget.plan is not None and self.dist.world == 1 and step < self.end \
                    and budget.out_of_time(final_s):
                self.end = step  # slower than measured: stop here rather than overrun the budget
            due = self._due(step, planning)
            if due.log or due.save or step % sync_every == 0:
                means = (self.dist.all_reduce_mean(acc) / acc_n).tolist()
                self.check_finite(means, checked)
                checked = step
                if self.bar is not None:
                    self.bar.set_postfix(loss=f"{means[0]:.5f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                         refresh=False)
            if self.bar is not None:
                self.bar.update(1)

            val_s, save_s = self._after_step(step, parts, means, due, since)
            if due.log:
                acc, acc_n = None, 0
            if planning:
                self.plan(val_s, save_s)
                final_s = val_s + save_s
                if self.main and self.step >= self.end:  # no more steps fit: last.pt records the plan
                    self.save(self.out / "last.pt", self.metrics)
            if due.log:
                since = (schedule.now(), step)

    def _warmup_done(self, step: int) -> bool:
        """``--time-budget``: whether the warm-up ends at ``step`` (rank 0 decides for every rank)."""
        device, budget = self.device, self.budget
        if device.type == "cuda" and budget.timed_from is None:
            torch.cuda.synchronize(device)  # the timer starts when the untimed steps really ended
        done = budget.warmup_done(step, self.start_step) if self.main else False
        if self.dist.world > 1:  # every rank ends the warm-up at rank 0's step
            done = bool(self.dist.all_reduce_mean(torch.tensor([float(done)], device=device)).item() > 0)
        if done and device.type == "cuda":
            torch.cuda.synchronize(device)
        return done

    def _due(self, step: int, planning: bool) -> _Due:
        """Validation, checkpoint and metrics row due after ``step`` (all of them at the end and at the plan)."""
        cfg, final = self.cfg, step == self.end
        val = bool(cfg.val) and (step % cfg.val_every == 0 or step == cfg.iters or planning
                                 or (final and self.budget is not None))
        save = step % cfg.save_every == 0 or final or planning
        return _Due(val=val, save=save, log=step % cfg.log_every == 0 or final or val)

    def _after_step(self, step: int, parts: dict, means: list[float] | None, due: _Due,
                    since: tuple[float, int]) -> tuple[float, float]:
        """The metrics row (rank 0), validation and checkpoints due after ``step``, then the barrier.

        Returns the seconds spent validating and writing ``last.pt`` (0 when not due).
        """
        t_extra = schedule.now()
        val_s = save_s = 0.0
        if due.val or due.save:
            self.check_weights()
        if self.main and due.log:
            val_s = self._write_row(step, parts, means, due.val, since)
        if self.main and due.save:
            t0 = schedule.now()
            self.save(self.out / "last.pt", self.metrics)
            save_s = schedule.now() - t0
        if due.save:
            self.last_saved = step
        if due.val or due.save:
            self.dist.barrier()  # the other ranks wait here while rank 0 validates and writes
        if self.budget is not None:
            self.budget.overhead_s += schedule.now() - t_extra if (due.val or due.save) else 0.0
        return val_s, save_s

    def _write_row(self, step: int, parts: dict, means: list[float], validate_now: bool,
                   since: tuple[float, int]) -> float:
        """Rank 0: the metrics row of ``step`` (validated when due; ``best.pt`` when it improved) to
        metrics.csv and TensorBoard. Returns the seconds the validation took."""
        t_last, step_last = since
        now = schedule.now()
        metrics = {"step": step, "lr": self.scheduler.get_last_lr()[0],
                   "its": round((step - step_last) / (now - t_last), 3)}
        metrics.update({n: float(f"{v:.6g}") for n, v in zip(self.names, means) if n in parts})
        val_s = 0.0
        if validate_now:
            t0 = schedule.now()
            metrics.update(self.validate())
            first = f"{Path(self.cfg.val[0]).name}_psnr"
            if metrics[first] > self.best_psnr:
                self.best_psnr = metrics[first]
                self.save(self.out / "best.pt", metrics)
            val_s = schedule.now() - t0
            self.bar.write(" ".join(f"{k}={v}" for k, v in metrics.items()))
        append_csv(self.out / "metrics.csv", metrics, self.columns)
        if self.tb is not None:
            for k, v in metrics.items():
                if k != "step":
                    self.tb.add_scalar(k, v, step)
        self.metrics = metrics
        return val_s
