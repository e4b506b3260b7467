"""``srdeploy tune``: measure the paths this machine offers for one model, and keep the result.

A path (candidate) is a backend x precision x model file x thread count:

=============  ===========================================  =========================================
precision      candidates                                   quality loss
=============  ===========================================  =========================================
the file's     ONNX Runtime and OpenVINO (the exact path;   0 (exact)
               ORT at the default threads is the baseline)
bf16           OpenVINO on CPUs with AVX-512 BF16 or AMX    measured here with ``srdeploy eval`` on
               (ONNX Runtime has no bf16 convolutions:      Set5/Set14 (eval's protocol), against
               listed as unavailable)                       the FP32 figures of the same protocol
int8           the INT8 sibling ``NAME_int8.onnx`` on       ONNX Runtime: from its metadata (what
               ONNX Runtime and OpenVINO                    ``srdeploy quantize`` measured on
                                                            Set5/Set14); OpenVINO: measured here, as bf16
=============  ===========================================  =========================================

Thread counts: ``--threads N``, else this CPU's physical and logical core counts (one setting on
a CPU without SMT). All candidates are timed on the deterministic benchmark input in rounds that
visit every candidate in a rotated order, one untimed call and ``BLOCK`` timed calls each, so load
from other processes hits every candidate alike and the ratios to the baseline are same-run
ratios; the load average before and after is recorded. Rounds stop at ``rounds`` or when the time
budget is spent (at least ``MIN_ROUNDS``). bf16's loss is measured only for a bf16 path at least
``MIN_GAIN`` faster than the exact default (a slower one is never chosen), and a loss measured by
an earlier run that is still valid is reused; the FP32 reference figures come from the INT8
sibling's metadata when quantize measured the same sets. The whole command stays within about
3 minutes on 2 cores.

The profile (``srdeploy.runtime.profile``) records the CPU model and flags, the library versions,
the model's and sibling's sha256, every candidate's median latency, speedup and loss, and the
``max_loss`` it was tuned for; ``--precision auto`` reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .profile import (DEFAULT_MAX_LOSS, FORMAT, MIN_GAIN, best_candidate, cpu_identity, describe_loss, eligible,
                      find_int8_sibling, int8_loss, library_versions, load_profile, profile_path, read_props,
                      save_profile, stale_reason)
from .metadata import sha256_file

MIN_ROUNDS = 3
BLOCK = 2  # timed calls per candidate per round (after one untimed call)
_BACKENDS = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class TuneConfig:
    """What ``srdeploy tune`` measures.

    Attributes:
        model: the ONNX model file.
        threads: one thread count to tune for (None = the CPU's physical and logical core counts;
            the profile then serves commands run without ``--threads``).
        max_loss: largest Y-PSNR loss (dB, worst of the validation sets) ``--precision auto`` may take.
        size: LR input (width, height) timed.
        rounds: most timing rounds.
        budget_s: seconds of timing after which no new round starts (``MIN_ROUNDS`` always run).
        val: validation folders for the bf16 loss (names under the data root, as ``srdeploy eval``).
        backends: backends to try (those not installed are listed as unavailable).
    """

    model: str
    threads: int | None = None
    max_loss: float = DEFAULT_MAX_LOSS
    size: tuple[int, int] = (128, 128)
    rounds: int = 5
    budget_s: float = 60.0
    val: tuple[str, ...] = ("Set5", "Set14")
    backends: tuple[str, ...] = _BACKENDS

    def validate(self) -> None:
        """Out-of-range values are an error naming the flag."""
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if not self.max_loss >= 0:
            raise ValueError(f"--max-loss must be >= 0 dB, got {self.max_loss}")
        if self.rounds < MIN_ROUNDS:
            raise ValueError(f"--rounds must be >= {MIN_ROUNDS}, got {self.rounds}")
        if Path(self.model).suffix.lower() != ".onnx":
            raise ValueError(f"{self.model}: srdeploy tune measures ONNX models (.onnx) on the CPU")
        if not Path(self.model).is_file():
            raise FileNotFoundError(f"{self.model}: model file does not exist")


def thread_settings(threads: int | None) -> list[int]:
    """``[threads]``, else this CPU's physical and logical core counts (deduplicated, ascending)."""
    if threads is not None:
        return [threads]
    cpu = cpu_identity()
    return sorted({cpu["physical_cores"], cpu["logical_cores"]})


# Where `srdeploy quantize` measures the INT8 loss it records (its eval runs through ONNX Runtime).
QUANTIZE_BACKEND = "onnxruntime"


def plan_candidates(cfg: TuneConfig, model: Path, file_precision: str, sibling: Path | None,
                    sibling_loss: dict | None) -> list[dict]:
    """Every candidate row, before measurement (the baseline first)."""
    rows = []
    for i, t in enumerate(thread_settings(cfg.threads)):
        for backend in cfg.backends:
            rows.append(_row(backend, file_precision, model, t, {}, "exact"))
            if file_precision == "fp32" and (backend == "openvino" or i == 0):  # ORT's refusal is shown once
                rows.append(_row(backend, "bf16", model, t, None, "measured"))
            if sibling is not None:  # quantize measured its loss through ONNX Runtime: another backend measures its own
                known = backend == QUANTIZE_BACKEND and sibling_loss is not None
                rows.append(_row(backend, "int8", sibling, t, sibling_loss if known else None,
                                 "quantize metadata" if known else "measured"))
    rows[0]["baseline"] = True  # ONNX Runtime, the file's precision, the first (physical-core) thread count
    return rows


def _row(backend: str, precision: str, model: Path, threads: int, loss: dict | None, source: str) -> dict:
    return {"backend": backend, "precision": precision, "model": str(model), "threads": threads, "median_ms": None,
            "speedup": None, "loss_db": loss, "loss_source": source, "error": None, "baseline": False}


def time_candidates(rows: list[dict], cfg: TuneConfig, log: Callable[[str], None]) -> dict:
    """Open every candidate, then time them in rotated rounds; fills median_ms/speedup/error in place.

    Returns a record of the timing (rounds, seconds, load average before and after).
    """
    import numpy as np

    from .measure import deterministic_input, time_calls
    from .open import open_session

    w, h = cfg.size
    x = deterministic_input((1, 3, h, w))
    sessions, times = {}, {}
    load_before = os.getloadavg()
    try:
        for i, row in enumerate(rows):
            try:
                s = open_session(row["model"], backend=row["backend"], precision=row["precision"],
                                 threads=row["threads"])
                s.infer(x)  # first call (shape compilation) outside the timing
                sessions[i], times[i] = s, []
            except Exception as exc:  # recorded per candidate: an unavailable path is a table row, not a crash
                row["error"] = _one_line(exc)
        t0, rounds = time.perf_counter(), 0
        while rounds < cfg.rounds and (rounds < MIN_ROUNDS or time.perf_counter() - t0 < cfg.budget_s):
            order = list(sessions)
            order = order[rounds % len(order):] + order[:rounds % len(order)] if order else order
            for i in order:
                times[i] += time_calls(lambda s=sessions[i]: s.infer(x), warmup=1, iters=BLOCK)
            rounds += 1
            log(f"tune: round {rounds}: " + ", ".join(f"{_label(rows[i])} {1e3 * np.median(times[i]):.0f} ms"
                                                      for i in sessions))
    finally:
        for s in sessions.values():
            s.close()
    for i, ts in times.items():
        rows[i]["median_ms"] = float(1e3 * np.median(ts))
    base = rows[0]["median_ms"]
    if base is None:
        raise RuntimeError(f"{rows[0]['model']}: the exact default (ONNX Runtime, {rows[0]['precision']}) did not run: "
                           f"{rows[0]['error']}")
    for row in rows:
        if row["median_ms"] is not None:
            row["speedup"] = base / row["median_ms"]
    return {"rounds": rounds, "seconds": round(time.perf_counter() - t0, 1), "size": [w, h],
            "load_average": [round(v, 2) for v in (*load_before, *os.getloadavg())]}


def eval_psnr(model: str, sets: tuple[str, ...], *, backend: str, precision: str | None, threads: int) -> dict:
    """Y-PSNR per set through ``srdeploy eval`` (eval's protocol: LR by MATLAB bicubic, Y, crop = scale,
    upscale's tiling), run as a subprocess: the runtime imports nothing of train/export."""
    with tempfile.TemporaryDirectory(prefix="srdeploy-tune-") as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "srdeploy", "eval", str(model), *sets, "--backend", backend,
               "--threads", str(threads), "-q", "--json", str(out)]
        if precision:
            cmd += ["--precision", precision]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"srdeploy eval exited with {proc.returncode}")
        return {s["name"]: float(s["psnr"]) for s in json.loads(out.read_text())["sets"]}


def measure_losses(rows: list[dict], cfg: TuneConfig, reference: dict | None, log: Callable[[str], None],
                   evaluate: Callable[..., dict] = eval_psnr, previous: dict | None = None) -> None:
    """Fill the loss of each row without one that could be chosen (bf16; INT8 on a backend other than
    the one quantize measured on), measured against FP32 figures of the same protocol (a row not
    faster than the exact default by ``MIN_GAIN`` never would be).

    Args:
        rows: timed candidates.
        cfg: the tune settings (validation sets, max loss).
        reference: FP32 Y-PSNR per set already measured on eval's protocol (the INT8 sibling's
            metadata), or None to measure it here on the exact default.
        log: progress printer.
        evaluate: ``eval_psnr`` (tests pass a stand-in).
        previous: the profile this run replaces; a loss it measured for the same backend,
            precision and validation sets is reused (same model, CPU and library versions).
    """
    names = [Path(v).name for v in cfg.val]
    for row in rows:
        if row["loss_db"] is not None or row["median_ms"] is None:
            continue
        if row["speedup"] < MIN_GAIN:
            row["loss_source"] = f"not measured: not {MIN_GAIN:.2f}x faster than the default, never chosen"
            continue
        old = _previous_loss(previous, row, cfg)
        if old is not None:
            row["loss_db"], row["loss_source"] = old, "measured (earlier tune run)"
            continue
        try:
            if reference is None or any(n not in reference for n in names):
                log(f"tune: measuring the FP32 reference on {', '.join(cfg.val)} (srdeploy eval)")
                reference = evaluate(rows[0]["model"], cfg.val, backend=rows[0]["backend"], precision=None,
                                     threads=rows[0]["threads"])
            log(f"tune: measuring {_label(row)}'s loss on {', '.join(cfg.val)} (srdeploy eval)")
            got = evaluate(row["model"], cfg.val, backend=row["backend"], precision=row["precision"],
                           threads=row["threads"])
            row["loss_db"] = {n: round(reference[n] - got[n], 4) for n in got}
            row["loss_source"] = "measured"
        except Exception as exc:  # no validation images, eval failure: the row cannot be chosen, and says why
            row["loss_source"] = f"not measured: {_one_line(exc)}"


def _previous_loss(previous: dict | None, row: dict, cfg: TuneConfig) -> dict | None:
    """A loss the replaced profile measured for the same path, when that profile is still valid."""
    if not previous or stale_reason(previous) or previous.get("val") != list(cfg.val):
        return None
    for old in previous.get("candidates", []):
        if (old["backend"], old["precision"], old["model"]) == (row["backend"], row["precision"], row["model"]) \
                and str(old.get("loss_source", "")).startswith("measured") and old.get("loss_db") is not None:
            return old["loss_db"]
    return None


def tune(cfg: TuneConfig, *, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
         evaluate: Callable[..., dict] = eval_psnr, write: bool = True) -> dict:
    """Measure, build and (``write``) save the profile of ``cfg.model`` on this machine.

    Returns:
        The profile (see the module docstring); ``profile["path"]`` is where it was written.
    """
    cfg.validate()
    model = Path(cfg.model).resolve()
    sha = sha256_file(model)
    props = read_props(model)
    precision = props.get("srdeploy.precision", "fp32")
    sibling, why = find_int8_sibling(model, sha) if precision == "fp32" else (None, "the model is not FP32")
    sibling_props = read_props(sibling) if sibling else {}
    log(f"tune: {model} ({precision}); INT8 sibling: {sibling.name if sibling else 'none, ' + why}")
    rows = plan_candidates(cfg, model, precision, sibling, int8_loss(sibling_props) if sibling else None)
    timing = time_candidates(rows, cfg, log)
    reference = _sibling_reference(sibling_props)
    measure_losses(rows, cfg, reference, log, evaluate, previous=load_profile(profile_path(sha, cfg.threads)))
    profile = {
        "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": cpu_identity(), "versions": library_versions(),
        "model": {"path": str(model), "sha256": sha, "precision": precision},
        "int8_sibling": ({"path": str(sibling), "sha256": sha256_file(sibling)} if sibling else {"none": why}),
        "threads_requested": cfg.threads, "max_loss": cfg.max_loss, "val": list(cfg.val), "timing": timing,
        "candidates": [{**r, "model_sha256": sha if r["model"] == str(model) else sha256_file(r["model"])}
                       for r in rows],
    }
    if write:
        profile["path"] = str(save_profile(profile, profile_path(sha, cfg.threads)))
    return profile


def _sibling_reference(props: dict) -> dict | None:
    """FP32 Y-PSNR per set that quantize measured on eval's protocol (same model, by sha256)."""
    try:
        return {k: float(v["fp32_psnr"]) for k, v in json.loads(props["srdeploy.int8"])["validation"].items()}
    except (KeyError, TypeError, ValueError):
        return None


def table_lines(profile: dict) -> list[str]:
    """The profile as a table, fastest first, with what ``--precision auto`` will choose."""
    rows = sorted(profile["candidates"], key=lambda r: (r["median_ms"] is None, r["median_ms"] or 0))
    pick, base = best_candidate(profile)
    t = profile["timing"]
    out = [f"{'path':<18} {'file':<24} {'threads':>7} {'median ms':>10} {'vs default':>10}  quality", "-" * 100]
    for r in rows:
        mark = " <- auto" if r is pick else (" (default)" if r.get("baseline") else "")
        if r["median_ms"] is None:
            why = r["error"].removeprefix(f"{r['model']}: ")  # the file is in the row already
            out.append(f"{_label(r):<18} {Path(r['model']).name:<24} {r['threads']:>7} {'-':>10} {'-':>10}  "
                       f"unavailable: {why}")
            continue
        quality = describe_loss(r) if r["loss_db"] is not None else r["loss_source"]
        if r["loss_db"] is not None and not eligible(r, profile["max_loss"]):
            quality += f" > --max-loss {profile['max_loss']:g}"
        out.append(f"{_label(r):<18} {Path(r['model']).name:<24} {r['threads']:>7} {r['median_ms']:>10.1f} "
                   f"{r['speedup']:>9.2f}x  {quality}{mark}")
    if "none" in profile.get("int8_sibling", {}):  # tune never quantizes (minutes of calibration): it says how
        out.append(f"no INT8 path: {profile['int8_sibling']['none']}")
    lavg = t["load_average"]
    out.append(f"input {t['size'][0]}x{t['size'][1]}, {t['rounds']} rounds in {t['seconds']} s, alternating; "
               f"load average {lavg[0]:.2f} before, {lavg[3]:.2f} after; CPU {profile['machine']['model']} "
               f"({' '.join(profile['machine']['flags'])})")
    return out


def _label(row: dict) -> str:
    return f"{row['backend']} {row['precision']}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{text[0] if text else type(exc).__name__}"
