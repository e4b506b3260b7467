"""What a run reads and writes in its folder: the start state, settings.json, metrics.csv, RNG state.

Checkpoints themselves are written by ``checkpoint.save_checkpoint`` (atomically, rank 0 only);
this module holds the rest of the run folder's bookkeeping, so that ``--resume`` finds what the
run left (``read_start_state``) and reports which settings changed (``settings_changes``).
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, load_generator
from .config import TrainConfig

BASE_COLUMNS = ["step", "loss", "lr", "its"]
# Settings whose change on --resume does not alter the optimisation (no note printed).
RESUME_NEUTRAL = {"resume", "device", "workers", "out", "tensorboard", "progress", "gpu_crops", "init",
                  "log_every", "val_every", "save_every", "val", "resolved", "time_budget"}


def read_start_state(cfg: TrainConfig, out: Path) -> dict:
    """Rank 0: the checkpoint to resume from or the SRGAN init weights, checked for the run."""
    last = out / "last.pt"
    if cfg.resume:
        if not last.is_file():
            raise FileNotFoundError(f"train: --resume given but {last} does not exist; "
                                    "start the run without --resume")
        ckpt = load_checkpoint(last, map_location="cpu")
        kind = ckpt.get("kind", "srresnet")  # checkpoints of the first trainer had no "kind"
        if kind != cfg.kind:
            raise ValueError(f"train: {last} is a {kind} run; resume it with `srdeploy train {kind} --resume`")
        if ckpt["arch"] != "SRResNet" or "optimizer" not in ckpt or "step" not in ckpt:
            raise ValueError(f"train: {last} holds no training state (optimizer, step); cannot resume from it")
        return {"resume": ckpt}
    if last.is_file():
        raise FileExistsError(f"train: {out} already holds a run ({last}); continue it with --resume, "
                              "or choose another --out")
    if cfg.kind == "srgan" and not cfg.init:
        raise ValueError("train srgan: --init CHECKPOINT is required (a trained SRResNet, e.g. "
                         "runs/NAME/best.pt from `srdeploy train srresnet`)")
    if cfg.init:
        _, init = load_generator(cfg.init)  # builds it once: wrong kwargs or shapes fail here, naming the file
        # The deployed weights of the init run: EMA when it kept one (as eval/export use).
        state = init.get("ema_state_dict") or init["state_dict"]
        return {"init": {"kwargs": dict(init["kwargs"]), "state_dict": state,
                         "source": "ema_state_dict" if init.get("ema_state_dict") else "state_dict"}}
    return {}


def settings_changes(old: dict, new: dict) -> list[str]:
    """"key: old -> new" for the recorded settings that changed and alter the optimisation."""
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in new
            if k in old and k not in RESUME_NEUTRAL and old[k] != new[k]]


def append_csv(path: Path, row: dict, columns: list[str]) -> None:
    """Append one row of metrics (missing columns left empty); the header goes with the first row."""
    exists = path.is_file() and path.stat().st_size > 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def prepare_metrics_csv(path: Path, columns: list[str], keep_upto_step: int) -> list[str]:
    """Make ``metrics.csv`` ready for a (re)started run; returns the columns to write.

    Rows after ``keep_upto_step`` (logged after the checkpoint a resume starts from) are dropped
    so steps never repeat, and the header becomes the old columns plus any new ones, so rows
    stay aligned. Rewritten atomically.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return list(columns)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        old_columns = list(reader.fieldnames or [])
        rows = [r for r in reader if _int_or_none(r.get("step")) is not None
                and int(r["step"]) <= keep_upto_step]
    merged = old_columns + [c for c in columns if c not in old_columns]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=merged, restval="", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return merged


def prepare_run_folder(out: Path, settings: dict, columns: list[str], start_step: int) -> list[str]:
    """Rank 0: the run folder ready for the steps after ``start_step``; returns the metrics.csv columns.

    Creates the folder, removes temporary checkpoint files left by a save killed mid-write,
    writes settings.json and cuts metrics.csv back to ``start_step`` (``prepare_metrics_csv``).
    """
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.pt.*.tmp"):  # left by a save killed mid-write (SIGKILL)
        stale.unlink(missing_ok=True)
    write_json_atomic(out / "settings.json", settings)
    return prepare_metrics_csv(out / "metrics.csv", columns, keep_upto_step=start_step)


def open_tensorboard(out: Path, start_step: int):
    """A TensorBoard writer in ``out/tb`` that drops events after ``start_step``; None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(out / "tb"), purge_step=start_step + 1)
    except ImportError:
        return None

def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def rng_state() -> dict:
    """Every RNG a training process may touch, in types ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state`` output (older checkpoints hold only "torch")."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
