"""Mutation check: plant known mistakes one at a time in a copy of the project; the fast tests must catch each.

    python scripts/mutate.py                 # every mutant (about 15-25 min on a loaded 2-core CPU)
    python scripts/mutate.py --only tiling   # mutants whose id contains "tiling"
    python scripts/mutate.py --list          # the mutants, nothing run

Each mutant replaces one exact snippet of one file (a mistake someone could really make: a changed
documented constant, a flag that is no longer passed on, a dropped step). The project is copied once
to a temporary folder; for each mutant the file is changed there, the fast tests that cover it run
(``pytest -x -m "not slow"`` on the listed test files, with a timeout), and the file is restored.
A mutant is *killed* when a test fails, *survived* when all pass (a gap in the tests: add a test that
fails on it), *timeout* when the run took too long, *stale* when its snippet is no longer in the file
(the code changed: update the mutant here). Exit status 1 when any mutant survived or is stale.

Why a script and not mutmut: mutmut (installed here) generates hundreds of operator-level mutants and
expects a plain src layout, while this project installs folders under other names (``cli/`` is
``srdeploy``, ``train/`` is ``srdeploy.train``: setuptools package-dir), so its copied tree would not
be the one imported. A curated list of mistakes that matter, each run against the tests that should
catch it, fits a 2-core CI machine and gives a survivor list a person can act on. The copy is made
importable as ``srdeploy`` through a folder of symlinks built from pyproject's package-dir, put first
on PYTHONPATH (it takes precedence over the editable install's finder), so nothing is installed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str          # path relative to the repository root
    old: str           # exact snippet, must occur exactly once
    new: str
    tests: tuple[str, ...]  # test files / node ids that should catch it
    why: str = ""


VERIFY_T = ("tests/test_documented_values.py", "tests/test_verify.py")
TILING_T = ("tests/test_tiling.py", "tests/test_bench.py::test_bench_tiled_model_only_matches_whole",
            "tests/test_upscale_flags.py")
UPSCALE_T = ("tests/test_upscale_flags.py", "tests/test_upscale.py", "tests/test_documented_values.py")
TRAIN_T = ("tests/test_train.py", "tests/test_train_schedule.py")
FAMILIES_T = "tests/test_families.py::test_deployable_model_is_the_original_under_its_conventions"

MUTANTS: tuple[Mutant, ...] = (
    # --- issue 19's list: documented numbers
    Mutant("verify-fp32-atol", "export/verify.py", "FP32_ATOL = 1e-4", "FP32_ATOL = 4e-3", VERIFY_T),
    Mutant("verify-fp16-atol", "export/verify.py", "FP16_ATOL = 2 / 255", "FP16_ATOL = 0.5", VERIFY_T),
    Mutant("fp16-threshold", "export/fp16.py", "DEFAULT_THRESHOLD = float(2 ** 14)",
           "DEFAULT_THRESHOLD = float(2 ** 16)", ("tests/test_documented_values.py", "tests/test_export.py")),
    # --- issue 19's list: training (tests are the train engineer's)
    Mutant("ema-update-noop", "train/steps.py", "e.lerp_(p.detach(), 1.0 - self.decay)", "pass", TRAIN_T),
    Mutant("adv-weight-ignored", "train/losses.py", "total = total + self.adv_weight * parts[\"g_adv\"]",
           "total = total + parts[\"g_adv\"]", TRAIN_T + ("tests/test_metrics.py",),
           "1000x too strong with the paper's 1e-3"),
    Mutant("vgg-rescale-1", "train/losses.py", "def __init__(self, features: nn.Module, *, rescale: float = 12.75):",
           "def __init__(self, features: nn.Module, *, rescale: float = 1.0):", TRAIN_T),
    Mutant("d-never-stepped", "train/steps.py", "            optimizer_step(self.d_optimizer, prec)\n",
           "            pass\n", TRAIN_T),
    Mutant("loss-l1-is-mse", "train/losses.py", "    if kind == \"l1\":\n        return nn.L1Loss()",
           "    if kind == \"l1\":\n        return nn.MSELoss()", TRAIN_T),
    Mutant("cosine-is-constant", "train/schedule.py",
           "    return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t))",
           "    return 1.0", TRAIN_T),
    Mutant("ema-buffers-not-copied", "train/steps.py", "            e.copy_(b)", "            pass", TRAIN_T),
    Mutant("gan-loss-target-swapped", "train/losses.py",
           "target = torch.ones_like(logits) if real else torch.zeros_like(logits)",
           "target = torch.zeros_like(logits) if real else torch.ones_like(logits)", TRAIN_T),
    # --- issue 19's list: upscale flags, demo
    # the flags become one TileSettings in runtime/cli/_args.py (settings_from_args), for every command
    Mutant("cli-ignores-tile-pad", "runtime/cli/_args.py", "tile_pad=args.tile_pad,", "tile_pad=None,",
           ("tests/test_upscale_flags.py",)),
    Mutant("cli-ignores-feather", "runtime/cli/_args.py", "feather=getattr(args, \"feather\", 0),", "feather=0,",
           ("tests/test_upscale_flags.py",)),
    Mutant("cli-ignores-alpha", "runtime/cli/_args.py", "alpha=getattr(args, \"alpha\", \"model\"),",
           "alpha=\"model\",", ("tests/test_upscale_flags.py",)),
    Mutant("cli-ignores-batch", "runtime/cli/_args.py", "batch=args.batch,", "batch=1,",
           ("tests/test_upscale_flags.py",)),
    Mutant("cli-ignores-max-memory", "runtime/cli/_args.py", "max_memory=args.max_memory)", "max_memory=None)",
           ("tests/test_edge_cli.py::test_eval_max_memory_changes_the_chosen_tile", "tests/test_settings.py"),
           "--max-memory parsed and dropped (issue 24: batch and eval did this)"),
    Mutant("trt-profile-no-margin", "runtime/backends/ort.py", "pad = tiling.pad_for(info.receptive_radius, info.tile_margin)",
           "pad = 0", ("tests/test_trt_calls.py::test_trt_provider_profile_from_tile_plan_and_options",)),
    Mutant("cli-upscale-default-settings", "runtime/cli/upscale.py", "up = Upscaler(session, run.tiling)",
           "up = Upscaler(session)", ("tests/test_upscale_flags.py",), "the settings built but not passed on"),
    Mutant("cli-ignores-quality", "runtime/cli/upscale.py", "quality=args.quality,", "quality=None,",
           ("tests/test_upscale_flags.py",)),
    Mutant("demo-model-panel-x0", "cli/demo.py", "for im in (bicubic, sr, hr)]", "for im in (bicubic, sr * 0, hr)]",
           ("tests/test_demo.py",)),
    Mutant("demo-no-lr-panel", "cli/demo.py", "crops = [np.repeat(np.repeat(lr_crop, scale, axis=0), scale, axis=1)]",
           "crops = [bicubic[y: y + size, x: x + size]]", ("tests/test_demo.py",)),
    Mutant("demo-psnr-on-crop", "cli/demo.py", "p_bic, p_sr = psnr(bicubic, hr, crop=scale), psnr(sr, hr, crop=scale)",
           "p_bic, p_sr = psnr(bicubic[:64, :64], hr[:64, :64], crop=scale), psnr(sr[:64, :64], hr[:64, :64], "
           "crop=scale)", ("tests/test_demo.py",)),
    # --- runtime/upscale.py
    Mutant("upscale-default-tile-128", "runtime/settings.py", "DEFAULT_TILE = 256", "DEFAULT_TILE = 128", UPSCALE_T),
    Mutant("upscale-margin-fraction", "runtime/settings.py", "DEFAULT_TILE_PAD_FRACTION = 0.3",
           "DEFAULT_TILE_PAD_FRACTION = 0.25", UPSCALE_T),
    Mutant("upscale-margin-is-radius", "runtime/settings.py",
           "return min(receptive_radius, max(DEFAULT_MIN_TILE_PAD, math.ceil(DEFAULT_TILE_PAD_FRACTION * receptive_radius)))",
           "return receptive_radius", UPSCALE_T),
    Mutant("upscaler-ignores-tile-pad", "runtime/upscale.py",
           "plan = plan_tiles(height, width, tile=tile, tile_pad=self.tile_pad,",
           "plan = plan_tiles(height, width, tile=tile, tile_pad=TileSettings().pad_for(self.session.info.receptive_radius),",
           UPSCALE_T),
    Mutant("upscaler-ignores-feather", "runtime/upscale.py", "feather=self.feather, spec=self.session.input_spec,",
           "feather=0, spec=self.session.input_spec,", UPSCALE_T),
    Mutant("upscaler-alpha-always-model", "runtime/upscale.py",
           "model_alpha = has_alpha and self.alpha == \"model\" and alpha_const is None",
           "model_alpha = has_alpha and alpha_const is None",
           UPSCALE_T),
    Mutant("upscaler-luma-weights", "runtime/upscale.py", "_LUMA = (0.299, 0.587, 0.114)",
           "_LUMA = (0.333, 0.334, 0.333)", UPSCALE_T),
    Mutant("upscaler-bgr-ignored", "runtime/upscale.py", "rgb = [2, 1, 0] if order == \"BGR\" else [0, 1, 2]",
           "rgb = [0, 1, 2]", UPSCALE_T),
    Mutant("pixelmap-floor", "runtime/pixels.py", "v = np.clip(np.rint(v), 0, self.maxval)",
           "v = np.clip(np.floor(v), 0, self.maxval)", UPSCALE_T, "truncation instead of rounding: -0.5 level bias"),
    # --- runtime/tiling.py
    Mutant("tiling-crop-shift", "runtime/tiling.py", "oy, ox = (ey0 - R.starts[i]) * s, (ex0 - C.starts[j]) * s",
           "oy, ox = (ey0 - R.starts[i]) * s + 1, (ex0 - C.starts[j]) * s", TILING_T),
    Mutant("tiling-window-no-context", "runtime/tiling.py", "(min(max(a - pad, 0), padded - window) for a, _ in cores)",
           "(min(max(a, 0), padded - window) for a, _ in cores)", TILING_T),
    Mutant("tiling-feather-ramp", "runtime/tiling.py", "ramp = (np.arange(2 * f * s, dtype=np.float32) + 0.5) / (2 * f * s)",
           "ramp = (np.arange(2 * f * s, dtype=np.float32) + 1.0) / (2 * f * s)", TILING_T,
           "blend weights no longer sum to one"),
    Mutant("tiling-profile-max", "runtime/tiling.py", "            t = hi - 2 * pad - (mult - 1)\n",
           "            t = hi - pad - (mult - 1)\n", TILING_T),
    Mutant("tiling-pad-zero-input", "runtime/tiling.py",
           "w = np.pad(w, ((0, 0), (0, wh - w.shape[1]), (0, ww - w.shape[2])), mode=\"edge\")",
           "w = np.pad(w, ((0, 0), (0, wh - w.shape[1]), (0, ww - w.shape[2])), mode=\"edge\") * 0", TILING_T),
    Mutant("tiling-columns-reversed", "runtime/tiling.py", "y0, x0 = R.starts[i], C.starts[j]",
           "y0, x0 = R.starts[i], C.starts[len(C.cores) - 1 - j]",
           ("tests/test_bench.py::test_bench_tiled_model_only_matches_whole",),
           "tiles in the wrong place: the bench test alone must see it (it used to compare sums)"),
    # --- export/fuse.py
    Mutant("fuse-no-eps", "export/fuse.py", "torch.rsqrt(bn.running_var.double() + bn.eps)",
           "torch.rsqrt(bn.running_var.double())", ("tests/test_fuse.py",)),
    Mutant("fuse-mean-not-subtracted", "export/fuse.py", "fused.bias.copy_(((c - bn.running_mean.double()) * factor + b)",
           "fused.bias.copy_(((c) * factor + b)", ("tests/test_fuse.py",)),
    Mutant("fuse-bn-bias-dropped", "export/fuse.py", "* factor + b).to(conv.weight.dtype))",
           "* factor).to(conv.weight.dtype))", ("tests/test_fuse.py",)),
    # --- export/verify.py
    Mutant("verify-psnr-floor-ignored", "export/verify.py", "if tol.min_psnr is not None and psnr < tol.min_psnr:",
           "if False:", VERIFY_T),
    Mutant("verify-min-psnr-40", "export/verify.py", "FP16_MIN_PSNR = 45.0", "FP16_MIN_PSNR = 40.0", VERIFY_T),
    Mutant("verify-mse-as-mae", "export/verify.py", "mse = float(np.mean(diff * diff))",
           "mse = float(np.mean(np.abs(diff)))", VERIFY_T),
    # --- runtime/open.py: the bundled default model
    Mutant("default-model-prefers-fp16", "runtime/open.py",
           "key=lambda p: (\"fp16\" in p.name.lower() or \"int8\" in p.name.lower(), p.name))",
           "key=lambda p: p.name)",
           ("tests/test_runtime_session.py",)),
    # --- video (issue 19 weak test): the encoder writing a wrong frame
    Mutant("video-black-frames", "runtime/media/video.py", "        writer.write(frame)\n",
           "        writer.write(frame * 0)\n", ("tests/test_video.py",)),
    Mutant("video-swapped-channels", "runtime/media/video.py", "        writer.write(frame)\n",
           "        writer.write(np.ascontiguousarray(frame[..., ::-1]))\n", ("tests/test_video.py",)),
    # --- issue 24: resume refuses other settings; output settings are checked before the model loads
    Mutant("jobs-changed-settings-ignored", "runtime/jobs.py",
           "return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))", "return []",
           ("tests/test_jobs.py", "tests/test_video_ffmpeg.py")),
    Mutant("video-checks-after-model", "runtime/cli/video.py", "    w, h = _check_request(args)  # source",
           "    w, h = 0, 0  # source", ("tests/test_video_ffmpeg.py",)),
    Mutant("video-avi-unknown", "runtime/media/ffmpeg/codecs.py", ' ".avi": ("avi", "h264"),', "",
           ("tests/test_video_ffmpeg.py", "tests/test_files.py")),
    # issue 25: concurrent writers, hostile metadata, QDQ weights
    Mutant("writers-replace-not-claim", "runtime/media/writers.py",
           "    with atomic_target(path, overwrite=overwrite) as tmp:", "    with atomic_target(path) as tmp:",
           ("tests/test_reliability3_misc.py",), "two runs to one new PNG both 'succeed'"),
    Mutant("dangling-link-is-free", "runtime/atomic.py", "    return os.path.lexists(path)",
           "    return os.path.exists(path)", ("tests/test_reliability3_misc.py",)),
    Mutant("metadata-radius-uncapped", "runtime/metadata.py",
           "        if not 0 <= self.receptive_radius <= MAX_RECEPTIVE_RADIUS:",
           "        if not 0 <= self.receptive_radius:", ("tests/test_reliability3_misc.py",)),
    Mutant("contract-radius-unchecked", "runtime/contract.py", "    if info.receptive_radius > bound:",
           "    if False:", ("tests/test_reliability3_misc.py",)),
    Mutant("budget-qdq-weights-unread", "runtime/budget.py",
           "        if node is None or node.op not in _WEIGHT_PATH or not node.inputs:",
           "        if True:", ("tests/test_reliability3_misc.py",)),
    # --- this wave's last fixes: each must stay caught by a fast test
    Mutant("fp16-integer-nodes-retyped", "export/fp16.py",
           "        if want is None:  # integer shape arithmetic: untouched", "        if False:",
           ("tests/test_engine.py",)),
    Mutant("margin-untiled-counted", "export/margin.py",
           "            if m < radius and all(axis_window(n, t, m)[0] >= n for n in x.shape[1:]):",
           "            if False:", ("tests/test_radius_margin.py",)),
    Mutant("budget-ignores-size-multiple", "runtime/upscale.py",
           "multiple=self.session.info.size_multiple, minimum=self.session.info.min_size)",
           "multiple=1, minimum=1)", ("tests/test_budget.py",)),
    Mutant("tune-ov-int8-loss-from-metadata", "runtime/tune.py",
           "known = backend == QUANTIZE_BACKEND and sibling_loss is not None",
           "known = sibling_loss is not None", ("tests/test_tune.py",)),
    Mutant("trt-center-any-consumer", "export/int8_trt.py",
           'convs = [n for n in users if n.op_type == "Conv" and n.input[0] == input_name]',
           'convs = users', ("tests/test_quantize.py",)),
    Mutant("budget-openvino-factor-unused", "runtime/budget.py",
           "    return ACTIVATION_FACTORS.get((session.backend, session.precision), ORT_ACTIVATION_FACTOR)",
           "    return ORT_ACTIVATION_FACTOR", ("tests/test_budget.py",)),
    # --- serve (issue 26): rows of a cross-request batch to the wrong request, a queue-jumping ledger
    Mutant("serve-batch-rows-swapped", "runtime/serve/scheduler.py", "it.y = y if len(batch) == 1 else y[k:k + n].copy()",
           "it.y = y if len(batch) == 1 else y[len(x) - k - n:len(x) - k].copy()", ("tests/test_serve.py",)),
    Mutant("serve-ledger-not-fifo", "runtime/serve/ledger.py",
           "while self._queue[0] is not me or self.reserved + nbytes > self.capacity:",
           "while self.reserved + nbytes > self.capacity:", ("tests/test_serve.py",)),
    Mutant("collect-takes-outdir", "runtime/media/files.py",
           "    return skip if skip != top and skip.is_relative_to(top) else None", "    return None",
           ("tests/test_files.py",)),
    Mutant("batch-sized-to-request", "runtime/batch/resources.py",
           "    fit = demand.slots(cores, gpus=math.inf, memory=ram)", "    fit = max(workers, cores)",
           ("tests/test_batch_resources.py",)),
    # --- issue 25: one job per work folder, the model's content, segment checksums, streams decided first
    Mutant("video-job-without-lock", "runtime/media/segments.py",
           "stack.enter_context(JobFolder(work, JOB_FILE).lock(str(dst)))", "work.mkdir(exist_ok=True)",
           ("tests/test_video_jobs.py",)),
    Mutant("video-model-hash-dropped", "runtime/jobs.py", '"model_sha256": model_sha256(model), ', "",
           ("tests/test_video_jobs.py",)),
    Mutant("video-segment-checksum-ignored", "runtime/media/segments.py",
           "    if folder.is_finished(task.name, task.path):\n", "    if task.path.is_file():\n",
           ("tests/test_video_jobs.py",)),
    Mutant("video-streams-all-copied", "runtime/media/ffmpeg/mux.py", "verdict = _verdict(s, holds, container)",
           "verdict = None", ("tests/test_video_streams.py",)),
    # --- issue 22: model families, srdeploy import, per-model tiling
    Mutant("families-kwargs-unchecked", "train/families.py", "wrong = [k for k in found if effective.get(k) != found[k]]",
           "wrong = []", ("tests/test_checkpoint.py",), "issue 25 item 5: kwargs trusted over the weights' shapes"),
    Mutant("pytorch-gan-eps-default", "train/foreign_archs.py", "eps = 0.8 if prelu else 1e-5", "eps = 1e-5",
           (FAMILIES_T,), "BatchNorm2d(64, 0.8) read as the momentum"),
    Mutant("conventions-no-denorm", "train/families.py", "y = torch.tanh(y) * self.std + self.mean",
           "y = torch.tanh(y)", (FAMILIES_T,)),
    Mutant("conventions-tanh-unit-dropped", "train/families.py", "y = (torch.tanh(y) + 1.0) * 0.5", "y = y",
           (FAMILIES_T,)),
    Mutant("import-prefix-kept", "train/importer.py", "sd = {k[len(p):]: v for k, v in sd.items()}", "pass",
           ("tests/test_families.py::test_import_records_where_the_weights_came_from", "tests/test_import_cli.py")),
    Mutant("import-params-before-ema", "train/importer.py", 'WRAPPERS = ("params_ema", "params",',
           'WRAPPERS = ("params", "params_ema",',
           ("tests/test_families.py::test_import_records_where_the_weights_came_from",)),
    Mutant("tiler-windows-not-aligned", "runtime/tiling.py", "starts = tuple((s - s % mult) for s in",
           "starts = tuple((s - 0) for s in", ("tests/test_tiling.py",), "a pixel-unshuffle model sees other blocks"),
    Mutant("gray-model-colour-as-gray", "runtime/upscale.py",
           "sess = _PerChannel(self.session) if model_channels == 1 and channels > 2 and k == 0 else self.session",
           "sess = self.session", ("tests/test_families.py::test_a_gray_model_upscales_gray_colour_and_alpha",)),
    Mutant("margin-threshold-loose", "export/margin.py", "        if worst < threshold:", "        if worst < 10 * threshold:",
           ("tests/test_radius_margin.py",)),
    Mutant("radius-probe-no-growth", "train/radius.py", "        if not touches:\n            return RadiusResult(r, \"probe\", n)",
           "        if True:\n            return RadiusResult(r, \"probe\", n)", ("tests/test_radius_margin.py",),
           "mixing beyond the convolutions (pooling, attention) cut at the first probe size"),
    Mutant("margin-default-ignored", "runtime/settings.py", "            return min(measured, receptive_radius)",
           "            return default_tile_pad(receptive_radius)", ("tests/test_settings.py",)),
    # --- issue 27: --precision auto, the INT8 sibling, the sub-pixel tail
    Mutant("auto-ignores-min-gain", "runtime/profile.py",
           'if reference is not None and pick["median_ms"] * MIN_GAIN > reference["median_ms"]:',
           "if False:", ("tests/test_tune.py",), "a path within noise of the default replaces it"),
    Mutant("auto-ignores-max-loss", "runtime/profile.py", "<= max_loss + 1e-9", "<= max_loss + 1e9",
           ("tests/test_tune.py",), "a lossy path chosen beyond --max-loss"),
    Mutant("sibling-of-any-model", "runtime/profile.py", "if source != (model_sha256 or sha256_file(model)):",
           "if False:", ("tests/test_tune.py",), "an INT8 file quantized from another model taken as the sibling"),
    Mutant("subpixel-slopes-tiled", "export/subpixel_tail.py", "np.repeat(slope, r * r)", "np.tile(slope, r * r)",
           ("tests/test_subpixel_tail.py",), "PReLU slopes moved to the wrong phase channels"),
    Mutant("batch-auto-per-worker", "runtime/cli/batch.py", "    run = settings_from_args(args).pinned()",
           "    run = settings_from_args(args)", ("tests/test_tune.py",),
           "each batch worker resolves --precision auto itself (plan.json records 'auto')"),
    Mutant("ray-replicas-auto-unpinned", "runtime/serve/ray_app.py", "run=config.run.pinned())", "run=config.run)",
           ("tests/test_tune.py",), "each Ray Serve replica resolves --precision auto itself"),
)


# ----------------------------------------------------------------------------- the copy
def make_copy(dest: Path) -> tuple[Path, Path]:
    """Copy the repository to ``dest/src`` and build ``dest/shim/srdeploy`` (symlinks per package-dir)."""
    src = dest / "src"
    skip = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", "build", "third_party",
                                  "runs", "*.pt.tmp")
    shutil.copytree(ROOT, src, ignore=skip, symlinks=True)
    pkg_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    shim = dest / "shim"
    for pkg, folder in sorted(pkg_dir.items(), key=lambda kv: kv[0].count(".")):
        target = shim.joinpath(*pkg.split("."))
        if target.exists():
            continue
        if "." not in pkg:  # the top package: its own files, sub-packages linked into it below
            target.mkdir(parents=True)
            for child in (src / folder).iterdir():
                (target / child.name).symlink_to(child)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(src / folder)
    return src, shim


def env_for(shim: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a same-size mutant in the same second must not reuse a stale .pyc
    if "SRDEPLOY_DATA" not in env:  # the default (../shared/data) is found relative to the repository
        code = "from srdeploy.train.data import data_root; print(data_root().resolve())"
        env["SRDEPLOY_DATA"] = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                              check=True).stdout.strip()
    return env


def check_import(src: Path, env: dict[str, str]) -> None:
    code = "import srdeploy.runtime.upscale as m, srdeploy.cli as c; print(m.__file__); print(c.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=src, env=env, capture_output=True, text=True)
    files = out.stdout.split()
    if out.returncode or len(files) != 2 or not all(Path(f).resolve().is_relative_to(src.resolve()) for f in files):
        raise SystemExit(f"mutate: the copy is not the code imported ({out.stdout.strip()} {out.stderr.strip()})")


def run_tests(src: Path, env: dict[str, str], tests: tuple[str, ...], timeout: float) -> tuple[str, str, float]:
    """('pass' | 'fail' | 'timeout', first failing test or last lines, seconds)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"> {timeout:.0f} s", time.perf_counter() - t0
    dt = time.perf_counter() - t0
    if proc.returncode == 0:
        return "pass", "", dt
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, flags=re.M)
    detail = failed[0] if failed else ((proc.stdout + proc.stderr).strip().splitlines() or [""])[-1]
    return "fail", detail, dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", metavar="TEXT", help="run mutants whose id contains TEXT (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per test run (default 600)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated run of the selected tests (they must pass for a kill to mean anything)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = ap.parse_args(argv)

    mutants = [m for m in MUTANTS if not args.only or any(o in m.id for o in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.id:<30} {m.file:<26} tests: {' '.join(m.tests)}" + (f"  ({m.why})" if m.why else ""))
        return 0
    if not mutants:
        print("mutate: no mutant matches --only", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="srdeploy-mutate-"))
    try:
        src, shim = make_copy(tmp)
        env = env_for(shim)
        check_import(src, env)
        print(f"mutate: {len(mutants)} mutant(s); copy in {tmp}", flush=True)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            status, detail, dt = run_tests(src, env, tests, args.timeout * 2)
            print(f"baseline ({len(tests)} test file(s), unmutated): {status} in {dt:.0f} s {detail}", flush=True)
            if status != "pass":
                print("mutate: the unmutated tests do not pass; fix that first", file=sys.stderr)
                return 2
        results: dict[str, list[str]] = {"killed": [], "survived": [], "timeout": [], "stale": []}
        for m in mutants:
            path = src / m.file
            original = path.read_text()
            count = original.count(m.old)
            if count != 1:
                results["stale"].append(m.id)
                print(f"{m.id:<30} STALE     snippet found {count} times in {m.file}: update scripts/mutate.py",
                      flush=True)
                continue
            path.write_text(original.replace(m.old, m.new))
            try:
                status, detail, dt = run_tests(src, env, m.tests, args.timeout)
            finally:
                path.write_text(original)
            verdict = {"fail": "killed", "pass": "survived", "timeout": "timeout"}[status]
            results[verdict].append(m.id)
            print(f"{m.id:<30} {verdict.upper():<9} {dt:6.0f} s  {detail}", flush=True)
        print(f"\nmutate: {len(mutants)} mutants: {len(results['killed'])} killed, {len(results['survived'])} "
              f"survived, {len(results['timeout'])} timeout, {len(results['stale'])} stale")
        for key in ("survived", "timeout", "stale"):
            if results[key]:
                print(f"  {key}: {', '.join(results[key])}")
        return 1 if results["survived"] or results["stale"] else 0
    finally:
        if args.keep:
            print(f"mutate: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
