"""Learning-rate schedules and the ``--time-budget`` planner.

The schedules read the config when called, so a plan (``--time-budget``) or a resume with new
settings changes them from the next step on (``apply_lr``).

``--time-budget``: it/s is measured after a warm-up, then the iterations are planned so that
the run with its validations and final checkpoint ends within the budget; the schedule spans
the plan. A run slower than measured stops early rather than overrun (``TimeBudget.out_of_time``).
"""

from __future__ import annotations

import math
import time

from .config import TrainConfig


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Learning-rate multiplier at ``step`` for the configured schedule."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return 1.0 if step < cfg.iters // 2 else 0.1
    t = min(step / max(1, cfg.iters), 1.0)
    return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def apply_lr(scheduler, base: float, cfg: TrainConfig) -> None:
    """Set a ``LambdaLR``'s learning rates to ``base * lr_factor(cfg, its step)``.

    Identical to what the scheduler computed when nothing changed; with a new lr, schedule or
    iters, the next step uses the new values (the scheduler would otherwise keep its old base).
    """
    scheduler.base_lrs = [base for _ in scheduler.base_lrs]
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"] = base
        group["lr"] = base * lr_factor(cfg, scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


# --- Time budget ---------------------------------------------------------------------------------
# Warm-up: the first steps are not timed (CUDA: cuDNN autotuning and lazy module loading; CPU:
# allocator growth, first data reads); then the plan is made once at least BUDGET_WARMUP_MIN_STEPS
# steps and BUDGET_WARMUP_FRACTION of the budget (at most BUDGET_WARMUP_MAX_S) were timed, or a
# quarter of the budget is gone. The plan keeps BUDGET_MARGIN of the budget (plus BUDGET_EXIT_S for
# leaving the process) in reserve.
BUDGET_UNTIMED_STEPS = {"cpu": 1, "cuda": 3}
BUDGET_WARMUP_MIN_STEPS = 3
BUDGET_WARMUP_FRACTION = 0.05
BUDGET_WARMUP_MAX_S = 15.0
BUDGET_MARGIN = 0.03
BUDGET_EXIT_S = 0.5


def now() -> float:
    """The clock of the training loop and the time budget (one function, so tests can replace it)."""
    return time.perf_counter()


def plan_iterations(*, step: int, remaining_s: float, its: float, cap: int, val_every: int,
                    save_every: int, val_s: float, save_s: float, validate: bool) -> int:
    """The last step of a run that fits in ``remaining_s`` seconds from ``step``.

    Counts ``its`` steps per second, a validation (``val_s``, plus a possible ``best.pt``
    write) at every multiple of ``val_every`` and at the end, and a checkpoint (``save_s``) at
    every multiple of ``save_every`` and at the end. Never more than ``cap``; ``step`` itself
    when not even one more step fits.
    """

    def cost(end: int) -> float:
        saves = -(-end // save_every) - step // save_every
        vals = (-(-end // val_every) - step // val_every) if validate else 0
        return (end - step) / its + saves * save_s + vals * (val_s + save_s)

    if cap <= step or cost(step + 1) > remaining_s:
        return step
    lo, hi = step + 1, cap  # cost is non-decreasing in end: largest end with cost <= remaining_s
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= remaining_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


class TimeBudget:
    """``--time-budget`` bookkeeping: the clock, the warm-up timing and the plan.

    Args:
        seconds: the budget.
        clock: ``now()`` when the invocation started.
        cap: ``--iters``: the plan never exceeds it.
    """

    def __init__(self, seconds: float, clock: float, cap: int, untimed: int = 1):
        self.seconds, self.clock, self.cap, self.untimed = float(seconds), clock, int(cap), untimed
        self.timed_from_step: int | None = None
        self.timed_from: float | None = None
        self.overhead_s = 0.0  # validation / checkpoint time inside the timed window
        self.plan: dict | None = None

    def elapsed(self) -> float:
        return now() - self.clock

    def warmup_done(self, step: int, start_step: int) -> bool:
        """Called after each step until it says True; starts the timer after the untimed steps."""
        if step - start_step == self.untimed:
            self.timed_from_step, self.timed_from, self.overhead_s = step, now(), 0.0
            return False
        if self.timed_from is None:
            return self.elapsed() > 0.5 * self.seconds  # very slow first steps: plan with what we have
        timed = now() - self.timed_from
        long_enough = timed >= min(BUDGET_WARMUP_FRACTION * self.seconds, BUDGET_WARMUP_MAX_S)
        return (step - self.timed_from_step >= BUDGET_WARMUP_MIN_STEPS and long_enough) or \
            self.elapsed() > 0.25 * self.seconds

    def its(self, step: int, start_step: int) -> float:
        """Measured steps per second (validation and checkpoint time excluded)."""
        if self.timed_from is None:  # no step was timed: the whole elapsed time per step
            return max(step - start_step, 1) / max(self.elapsed(), 1e-6)
        seconds = now() - self.timed_from - self.overhead_s
        return max(step - self.timed_from_step, 1) / max(seconds, 1e-6)

    def reserve(self) -> float:
        return BUDGET_MARGIN * self.seconds + BUDGET_EXIT_S

    def make_plan(self, cfg: TrainConfig, *, step: int, start_step: int, val_s: float, save_s: float) -> dict:
        """After the warm-up: the plan (``planned_iters`` and what it was computed from).

        Args:
            cfg: the run's settings (validation and checkpoint intervals, validation folders).
            step, start_step: the current step and the step this invocation started from.
            val_s, save_s: measured seconds of one validation and one checkpoint write.
        """
        its = self.its(step, start_step)
        remaining = self.seconds - self.elapsed() - self.reserve()
        planned = plan_iterations(step=step, remaining_s=remaining, its=its, cap=self.cap,
                                  val_every=cfg.val_every, save_every=cfg.save_every, val_s=val_s,
                                  save_s=save_s, validate=bool(cfg.val))
        return {"planned_iters": planned, "its": round(its, 4), "warmup_steps": step - start_step,
                "validation_s": round(val_s, 3), "checkpoint_s": round(save_s, 3),
                "planned_at_s": round(self.elapsed(), 3)}

    def out_of_time(self, final_s: float) -> bool:
        """True when one more step, the final validation and checkpoint would end past the budget."""
        its = self.plan["its"] if self.plan else 1e9
        return self.elapsed() + 1.0 / its + final_s + BUDGET_EXIT_S > self.seconds
