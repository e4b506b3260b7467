"""Per-machine tune profiles and what ``--precision auto`` makes of them.

``srdeploy tune MODEL`` (``srdeploy.runtime.tune``) times every backend x precision x thread
setting this machine offers for one ONNX model and writes what it measured here, as one JSON file
per model and thread request in the user cache folder (``platformdirs``):
``<cache>/srdeploy/tune/<model sha256[:16]>-<default|tN>.json``. ``--precision auto`` reads it
back when the session recipe is resolved (``SessionRecipe.resolved``, the one place a recipe
becomes concrete) and picks the fastest measured candidate whose quality loss is at most the
``--max-loss`` the profile was tuned for; the choice and the reason go into the recipe's ``note``,
which every runtime command prints on its first line. Nothing is chosen silently:

==================================  ======================================================
situation                           ``--precision auto`` runs
==================================  ======================================================
no profile for this model/threads   the exact default (file's backend and precision); the
                                    note suggests ``srdeploy tune``
profile from another CPU, other     the exact default; the note says why the profile is
library versions, changed model or  stale and to re-run ``srdeploy tune``
INT8 sibling
profile                             its fastest candidate within max loss, unless no
                                    candidate beats the exact default by ``MIN_GAIN``
not an .onnx file, or not the CPU   the file's own precision (tune measures ONNX on CPUs)
==================================  ======================================================

The INT8 sibling of ``NAME.onnx`` is ``NAME_int8.onnx`` beside it (``srdeploy quantize MODEL.onnx
-o MODEL_int8.onnx``, as the bundle names ``models/srresnet_x4_int8.onnx``), and only when its
metadata says it was quantized from exactly this file (``srdeploy.int8`` records the FP32 model's
sha256 and the loss quantize measured on Set5/Set14).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

from .metadata import sha256_file

FORMAT = "srdeploy.tune/1"
#: A faster path must beat the exact default by this factor in the tune run to be chosen: smaller
#: gains are within the run-to-run noise of a shared CPU, and "never slower than the default" wins.
MIN_GAIN = 1.05
DEFAULT_MAX_LOSS = 0.05
KEY_INT8 = "srdeploy.int8"  # written by srdeploy quantize: calibration, fp32_sha256, measured loss
#: CPU features that decide which paths exist and how fast they are (recorded, and compared).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile",
             "asimd", "bf16", "i8mm", "sve")
_BACKENDS = ("onnxruntime", "openvino")  # the CPU backends a profile covers


# ----------------------------------------------------------------------------- this machine
def cpu_identity() -> dict:
    """CPU model, the flags in ``CPU_FLAGS`` it has, core counts and architecture (Linux
    ``/proc/cpuinfo``; elsewhere what ``platform`` says)."""
    text = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pass
    model, flags, cores = platform.processor() or platform.machine(), set(), set()
    phys = core = None
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key in ("model name", "Model") and value:
            model = value
        elif key in ("flags", "Features"):
            flags |= set(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            cores.add((phys, core))
    logical = os.cpu_count() or 1
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags], "logical_cores": logical,
            "physical_cores": len(cores) or logical, "arch": platform.machine()}


def library_versions() -> dict:
    """Versions of the packages whose kernels a profile measured (None = not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    def first(*names: str) -> str | None:
        for name in names:
            try:
                return version(name)
            except PackageNotFoundError:
                continue
        return None

    return {"onnxruntime": first("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
            "openvino": first("openvino"), "srdeploy": first("srdeploy")}


def profile_dir() -> Path:
    """``<user cache>/srdeploy/tune`` (``platformdirs``; XDG_CACHE_HOME on Linux)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("srdeploy")) / "tune"


def profile_path(model_sha256: str, threads: int | None) -> Path:
    """Where the profile of a model (by content) and thread request lives."""
    return profile_dir() / f"{model_sha256[:16]}-{'default' if threads is None else f't{threads}'}.json"


# ----------------------------------------------------------------------------- model files
def read_props(path: str | os.PathLike) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` through ONNX Runtime (no optimisation: ~30 ms)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return dict(sess.get_modelmeta().custom_metadata_map)


def int8_sibling_name(model: str | os.PathLike) -> Path:
    """``dir/NAME.onnx`` -> ``dir/NAME_int8.onnx`` (where ``srdeploy quantize -o`` is told to write)."""
    model = Path(model)
    return model.with_name(f"{model.stem}_int8.onnx")


def int8_loss(props: dict[str, str]) -> dict[str, float] | None:
    """Per validation set, the Y-PSNR loss (dB) quantize measured; None when not recorded."""
    try:
        record = json.loads(props[KEY_INT8])
        return {name: float(v["loss_db"]) for name, v in record["validation"].items()}
    except (KeyError, TypeError, ValueError):
        return None


def find_int8_sibling(model: str | os.PathLike, model_sha256: str | None = None) -> tuple[Path | None, str]:
    """The INT8 model quantized from ``model`` that sits beside it, and a note saying why not.

    Args:
        model: the FP32 ONNX file.
        model_sha256: its sha256 when already known.

    Returns:
        ``(path, "")`` when ``NAME_int8.onnx`` exists and its ``srdeploy.int8`` metadata names
        ``model``'s sha256 as its source; ``(None, why)`` otherwise.
    """
    sibling = int8_sibling_name(model)
    if not sibling.is_file():
        return None, f"no {sibling.name} beside it (srdeploy quantize {Path(model).name} -o {sibling.name})"
    try:
        record = json.loads(read_props(sibling).get(KEY_INT8) or "{}")
    except Exception as exc:  # an unreadable sibling is reported, never used
        return None, f"{sibling.name} cannot be read ({type(exc).__name__}: {exc})"
    source = record.get("fp32_sha256")
    if source != (model_sha256 or sha256_file(model)):
        return None, (f"{sibling.name} was quantized from another file (its metadata names sha256 "
                      f"{str(source)[:12]}...); re-run srdeploy quantize")
    return sibling, ""


# ----------------------------------------------------------------------------- profiles
def load_profile(path: Path) -> dict | None:
    """A profile file, or None when it is missing, unreadable or of another format."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def save_profile(profile: dict, path: Path) -> Path:
    """Write a profile atomically (a reader never sees half a file)."""
    from .atomic import write_json

    write_json(path, profile, indent=2, fsync=False)
    return path


def stale_reason(profile: dict) -> str:
    """Why a profile no longer describes this machine and these files ("" = it does)."""
    cpu, then = cpu_identity(), profile.get("machine", {})
    for key in ("model", "flags", "logical_cores"):
        if then.get(key) != cpu[key]:
            return f"it was measured on another CPU ({key} {then.get(key)} here {cpu[key]})"
    versions = library_versions()
    for name, old in profile.get("versions", {}).items():
        if versions.get(name) != old:
            return f"{name} changed ({old} -> {versions.get(name)})"
    others = {c["model"]: c.get("model_sha256") for c in profile.get("candidates", [])
              if c["model"] != profile["model"]["path"]}  # the INT8 sibling (the model itself is the key)
    for path, sha in others.items():
        if not Path(path).is_file() or sha256_file(path) != sha:
            return f"{Path(path).name} changed or is gone"
    return ""


def eligible(candidate: dict, max_loss: float) -> bool:
    """Measured without error, and its worst per-set loss is known and at most ``max_loss``."""
    loss = candidate.get("loss_db")
    return (candidate.get("error") is None and candidate.get("median_ms") is not None and loss is not None
            and max(loss.values(), default=0.0) <= max_loss + 1e-9)


def best_candidate(profile: dict, backend: str = "auto") -> tuple[dict | None, dict]:
    """(chosen candidate, the exact default it was compared with) from one profile.

    The fastest eligible candidate (of ``backend`` unless "auto"). The reference is the run's
    baseline (the exact default), or with a fixed backend that backend's fastest exact candidate;
    a candidate that does not beat the reference by ``MIN_GAIN`` in the same run loses to it.
    None when ``backend`` has no usable candidate.
    """
    cands = profile["candidates"]
    base = next(c for c in cands if c.get("baseline"))
    pool = [c for c in cands if eligible(c, profile["max_loss"]) and backend in ("auto", c["backend"])]
    exact = [c for c in pool if c.get("loss_source") == "exact"]
    reference = base if backend in ("auto", base["backend"]) else min(exact, key=lambda c: c["median_ms"], default=None)
    if not pool:
        return reference, base
    pick = min(pool, key=lambda c: c["median_ms"])
    if reference is not None and pick["median_ms"] * MIN_GAIN > reference["median_ms"]:
        pick = reference
    return pick, base


def describe_loss(candidate: dict) -> str:
    """'exact' or 'measured loss 0.045 dB (Set5)': the worst set of a candidate."""
    loss = candidate.get("loss_db") or {}
    if candidate.get("loss_source") == "exact" or not loss:
        return "exact"
    worst = max(loss, key=loss.get)
    return f"measured loss {loss[worst]:.3f} dB ({worst}, {candidate['loss_source']})"


# ----------------------------------------------------------------------------- --precision auto
def choose(recipe: Any) -> Any:
    """The concrete recipe ``--precision auto`` stands for on this machine, with its ``note``.

    Args:
        recipe: a ``SessionRecipe`` whose precision is "auto".

    Returns:
        A copy with model, backend, precision and threads chosen from the profile (or the exact
        default: precision None) and ``note`` saying what was chosen and why.
    """
    from .backends import backend_for, canonical, parse_device

    exact = replace(recipe, precision=None)
    model = Path(recipe.model)
    backend = canonical(recipe.backend)
    file_backend = backend_for(model, backend)
    device = recipe.device or "cpu"
    if (model.suffix.lower() != ".onnx" or file_backend not in _BACKENDS
            or parse_device(device)[0] != "cpu" or not model.is_file()):
        return exact  # tune covers ONNX models on the CPU; anything else runs what the file computes
    where = f"{file_backend}, the file's own precision"
    threads = "" if recipe.threads is None else f" --threads {recipe.threads}"
    sha = sha256_file(model)
    profile = _profile_for(sha, recipe.threads)
    if profile is None:
        return replace(exact, note=f"precision auto -> exact default ({where}): no tune profile for this model"
                                   f"{' at ' + str(recipe.threads) + ' threads' if threads else ''} on this "
                                   f"machine; `srdeploy tune {model}{threads}` measures faster paths (bf16, INT8)")
    why = stale_reason(profile)
    if why:
        return replace(exact, note=f"precision auto -> exact default ({where}): the tune profile is stale, {why}; "
                                   f"re-run `srdeploy tune {model}{threads}`")
    options_backend = _options_backend(recipe.options)
    pick, base = best_candidate(profile, options_backend or ("auto" if backend == "auto" else file_backend))
    if pick is None:
        return replace(exact, note=f"precision auto -> exact default ({where}): the tune profile has no usable "
                                   f"{file_backend} measurement; re-run `srdeploy tune {model}{threads}`")
    run = str(model)
    if pick["model"] != profile["model"]["path"]:  # the INT8 sibling: the one beside this file, as tuned
        run = str(int8_sibling_name(model))
        if not Path(run).is_file() or sha256_file(run) != pick.get("model_sha256"):
            return replace(exact, note=f"precision auto -> exact default ({where}): the tuned INT8 model is not "
                                       f"beside this file ({Path(run).name}); re-run `srdeploy tune {model}{threads}`")
    when = profile.get("created", "")[:10] or str(date.today())
    name = f"{pick['backend']} {pick['precision']}"
    file = "" if run == str(model) else f" ({Path(run).name})"
    line = (f"precision auto -> {name}{file}, {pick['threads']} threads: {pick['speedup']:.2f}x "
            f"{base['backend']} {base['precision']} on this CPU (srdeploy tune, {when}), {describe_loss(pick)}")
    if pick.get("loss_source") != "exact":
        line += f"; --precision {profile['model']['precision']} for exact"
    elif pick is base:
        line += "; no faster path within --max-loss " + f"{profile['max_loss']:g} dB beat it by {MIN_GAIN:.2f}x"
    options = recipe.options if pick["backend"] == options_backend else None
    return replace(recipe, model=run, backend=pick["backend"], precision=pick["precision"],
                   threads=pick["threads"] if recipe.threads is None else recipe.threads, options=options, note=line)


def _profile_for(sha: str, threads: int | None) -> dict | None:
    """The profile for a thread request: ``tune --threads N``'s, else the default profile's
    candidates at N threads when its baseline ran at N (same-run ratios either way)."""
    profile = load_profile(profile_path(sha, threads))
    if profile is None and threads is not None:
        default = load_profile(profile_path(sha, None))
        if default and any(c.get("baseline") and c["threads"] == threads for c in default.get("candidates", [])):
            profile = {**default, "candidates": [c for c in default["candidates"] if c["threads"] == threads]}
    return profile


def _options_backend(options: Any) -> str | None:
    """The backend whose non-default options the user passed (auto then stays on it), else None."""
    from .backends.options import OPTIONS

    if options is None or options == type(options)():
        return None
    names = [name for name, cls in OPTIONS.items() if isinstance(options, cls) and name in _BACKENDS]
    return names[0] if names else None
