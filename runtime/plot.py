"""Plot benchmark results (schema ``srdeploy.bench/1``): fps by input size, backend and tool.

One PNG with grouped bars: input sizes on the x axis (sorted by pixel count), one bar per
series, where a series is (tool, backend, device, precision, CPU threads), so the Python tool
(``srdeploy bench``) and the C++ one (``srbench``) stand side by side for each backend. Panels:
model-only fps; full-path fps (where any file has it); and, for ``--compare-torch`` results, our
model and PyTorch eager (BN unfused) from their alternating same-run timing, the like-for-like
comparison (separate runs on a loaded machine can differ more than the two runtimes do).
matplotlib is optional (``pip install 'srdeploy[plot]'``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_target


def load_results(paths: list[str | os.PathLike]) -> list[dict]:
    """Read result files; a file that is not a benchmark result gives a ValueError naming it."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: result file does not exist")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{p}: not a JSON file ({exc})") from exc
        items = data if isinstance(data, list) else [data]
        for item in items:
            if not isinstance(item, dict) or item.get("schema") != "srdeploy.bench/1":
                raise ValueError(f"{p}: not a benchmark result (no \"schema\": \"srdeploy.bench/1\")")
            out.append(item)
    return out


def _threads(r: dict) -> str:
    n = (r.get("threads") or {}).get("intra_op")
    return f"{n} thr" if n else "default thr"


def _series_label(r: dict) -> str:
    tool = "C++" if "srbench" in r.get("tool", "") else "Python"
    label = f"{tool} {r['backend']} {r.get('device', '')} {r.get('precision', '')}"
    return f"{label} {_threads(r)}" if r.get("device", "cpu") == "cpu" else label


def collect(results: list[dict], metric: str = "model_only") -> tuple[list[str], dict[str, dict[str, float]]]:
    """(size labels in pixel order, series label -> size label -> fps); duplicates keep the best fps.

    Args:
        results: loaded result objects.
        metric: "model_only", "full_path" or "compare_torch" (our model and PyTorch eager from
            the alternating timing of ``--compare-torch``).
    """
    sizes: dict[str, int] = {}
    series: dict[str, dict[str, float]] = {}

    def add(label: str, size: str, fps: float) -> None:
        series.setdefault(label, {})
        series[label][size] = max(fps, series[label].get(size, 0.0))

    for r in results:
        inp = r["input"]
        size = f"{inp['width']}x{inp['height']}" + (f" b{inp['batch']}" if inp.get("batch", 1) != 1 else "")
        timing = r["results"].get(metric)
        if timing is None:
            continue
        sizes[size] = inp["width"] * inp["height"] * inp.get("batch", 1)
        if metric == "compare_torch":  # the same-run, alternating pair
            add(_series_label(r), size, float(timing["ours"]["fps"]))
            add(f"PyTorch eager unfused {r.get('device', '')} fp32 {_threads(r)}", size, float(timing["torch"]["fps"]))
        else:
            add(_series_label(r), size, float(timing["fps"]))
    order = sorted(sizes, key=lambda s: (sizes[s], s))
    return order, series


def plot_results(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write a PNG of fps by size and series (see module doc) from result files.

    Args:
        paths: JSON result files of ``srdeploy bench --json`` or the C++ ``srbench --json``.
        out: PNG file to write (replaced atomically).
    """
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("plotting needs matplotlib: pip install 'srdeploy[plot]'", name="matplotlib") from exc
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    results = load_results(paths)
    panels = [(m, *collect(results, m)) for m in ("model_only", "full_path", "compare_torch")]
    panels = [p for p in panels if p[2]]
    if not panels:
        raise ValueError("no results with model-only or full-path timings to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 1.6 * max(len(p[1]) for p in panels) + 3), 4.2 * len(panels)),
                             squeeze=False)
    for ax, (metric, sizes, series) in zip(axes[:, 0], panels):
        labels = sorted(series)
        width = 0.8 / max(1, len(labels))
        x = np.arange(len(sizes))
        for k, label in enumerate(labels):
            vals = [series[label].get(s, np.nan) for s in sizes]
            bars = ax.bar(x - 0.4 + width * (k + 0.5), vals, width, label=label)
            for bar, v in zip(bars, vals):
                if np.isfinite(v):
                    ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7)
        ax.set_xticks(x, sizes)
        ax.set_xlabel("LR input size (W x H, batch)")
        ax.set_ylabel("frames per second")
        ax.set_title({"model_only": "model only (prepared batch)", "full_path": "full path (uint8 -> uint8)",
                      "compare_torch": "model only vs PyTorch eager, same run (alternating blocks)"}[metric])
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    machines = sorted({f"{r['machine'].get('cpu', '')} x{r['machine'].get('cores', '')}"
                       + (f", {r['machine']['gpu']}" if r["machine"].get("gpu") else "") for r in results})
    fig.suptitle("srdeploy benchmark: " + "; ".join(machines), fontsize=9)
    fig.tight_layout()
    out = Path(out)
    try:
        with atomic_target(out) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(fig)
    return out
