"""Throughput benchmark of a deployed SR model: model-only vs full path, side by side.

What is timed (latency per batch, ``time.perf_counter``, after ``warmup`` untimed calls):

- ``model_only``: ``session.infer`` on a float32 NCHW batch prepared once (the deterministic
  input below). With ``tile`` > 0 and an input larger than the tile, the prepared float32 image
  goes through ``tiled_infer`` instead (tile planning and stitching are then part of it).
- ``full_path``: what a user's frame costs: uint8 RGB HWC images -> pre-processing (scale to
  the model's input range, HWC -> CHW) -> (tiled) inference, including host/device transfers of
  the backend -> post-processing back to uint8. This is the same code ``srdeploy video`` runs
  per batch of frames (``upscale_frames``).
- ``compare_torch`` (optional): PyTorch eager, FP32, BatchNorm NOT folded, on the same input,
  alternated block by block with our session in the same run so background load hits both alike.
- ``video`` (optional): end-to-end fps of ``upscale_video`` (decode | infer | encode pipeline)
  against the model-only fps of the same frame size.

The result is one JSON object following ``bench_schema.json`` (schema ``srdeploy.bench/1``),
shared with the C++ tool (cpp_bench): both use the same deterministic input,
``x.flat[i] = ((i * 37 + 11) % 256) / 255`` over (N, 3, H, W) in C order, and record
``output_checksum`` = float64 sum of all output values of one inference on it, so the two tools
can be checked against each other.

The input, checksum and timers are in ``runtime.measure``; the machine and version record and
the schema in ``runtime.bench_record``. This module imports neither torch nor anything of ours
outside ``srdeploy.runtime``; the torch reference is passed in as a plain callable (see
``torch_reference`` below).
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .bench_record import (SCHEMA_ID, SCHEMA_PATH, TOOL, library_versions, load_schema,  # noqa: F401 (re-exported)
                           machine_info, validate_result)
from .measure import (deterministic_images, deterministic_input, output_checksum,  # noqa: F401 (re-exported)
                      summarize, time_alternating, time_calls)
from .metadata import sha256_file
from .settings import RunSettings


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class BenchConfig:
    """What ``run_bench`` measures (argparse only fills it).

    Attributes:
        settings: the ``RunSettings``: the session to open (model, backend, device, precision,
            threads, options) and the tiling; ``tiling.batch`` is the images per inference call,
            ``tiling.tile`` 0 times whole images, "auto" the largest tile that fits
            ``tiling.max_memory``.
        width, height: LR input size.
        warmup: untimed calls before timing.
        iters: timed calls.
        full_path: also time uint8 -> uint8.
        video: None = no video mode; "" = a synthetic video; else a video file to upscale.
        video_frames: frames of the synthetic video.
        compare_torch: checkpoint of the same model to time in PyTorch eager (unfused, FP32).
        compare: other models to time against the main one, ``MODEL``, ``MODEL@BACKEND`` or
            ``MODEL@BACKEND:PRECISION``
            (alternating blocks, same input, same threads).
        peak: also measure the machine's FP32 FMA peak (``srbench --peak``, same threads) and
            report the fraction of it each model reaches.
    """

    settings: RunSettings
    width: int
    height: int
    warmup: int = 3
    iters: int = 20
    full_path: bool = True
    video: str | None = None
    video_frames: int = 30
    compare_torch: str | None = None
    compare: tuple[str, ...] = ()
    peak: bool = False

    model = property(lambda self: str(self.settings.recipe.model), doc="the model file")
    batch = property(lambda self: self.settings.tiling.batch, doc="images (or tiles) per inference call")
    threads = property(lambda self: self.settings.recipe.threads, doc="CPU threads (None = the backend's)")
    precision = property(lambda self: self.settings.recipe.precision, doc="requested precision")

    def validate(self) -> None:
        """One message per bad value (the tiling validates itself)."""
        if self.iters < 1 or self.warmup < 0:
            raise ValueError(f"--iters must be >= 1 and --warmup >= 0, got {self.iters} and {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.video_frames < 1:
            raise ValueError(f"--video-frames must be >= 1, got {self.video_frames}")
        for spec in self.compare:
            parse_compare(spec)


def parse_compare(spec: str) -> tuple[str, str, str | None]:
    """``MODEL[@BACKEND[:PRECISION]]`` -> (model, backend, precision or None = the file's).

    The part after the last "@" is a backend only when it is a backend name or alias, so a file
    name containing "@" still works; the backend must open the file ("auto" stays "auto" with
    precision "auto": the tune profile chooses both).
    """
    from .backends import ALIASES, NAMES, backend_for
    from .metadata import PRECISIONS
    from .open import AUTO

    model, sep, tail = spec.rpartition("@")
    backend, _, precision = tail.partition(":")
    if not sep or (backend not in NAMES and backend not in ALIASES):
        model, backend, precision = spec, "auto", ""
    if not Path(model).is_file():
        raise FileNotFoundError(f"--compare {spec}: model file {model} does not exist")
    if precision and precision not in (*PRECISIONS, AUTO):
        raise ValueError(f"--compare {spec}: precision {precision!r} is not one of {', '.join(PRECISIONS)}, {AUTO}")
    resolved = backend_for(model, backend)
    return model, "auto" if precision == AUTO and backend == "auto" else resolved, precision or None


# --------------------------------------------------------------------------- the benchmark
TorchRunner = Callable[[np.ndarray], np.ndarray]


def run_bench(cfg: BenchConfig, *, session=None, torch_runner: tuple[TorchRunner, dict] | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr), progress: bool = False) -> dict:
    """Measure and return one result object (schema ``srdeploy.bench/1``).

    Args:
        cfg: what to measure.
        session: an already open Session (else ``cfg.settings.recipe`` is opened and closed here).
        torch_runner: (callable float32 NCHW -> float32 NCHW, info dict) for ``compare_torch``;
            the caller builds it so this module never imports torch.
        log: where progress lines go (stderr by default).
        progress: progress bars over the timed calls (stderr).
    """
    from .open import open_session

    cfg.validate()
    own = session is None
    if own:
        session = open_session(cfg.settings.recipe)
    try:
        return _run(cfg, session, torch_runner, log, progress)
    finally:
        if own:
            session.close()


def _tiling_applies(tile: int | tuple[int, int] | None, height: int, width: int) -> bool:
    th, tw = (tile, tile) if not isinstance(tile, tuple) else tile
    return bool(th) and (height > th or width > tw)


def _run(cfg: BenchConfig, session, torch_runner, log, progress: bool = False) -> dict:
    from .media.video import upscale_frames
    from .upscale import Upscaler

    n, h, w = cfg.batch, cfg.height, cfg.width
    out_px = h * session.info.scale * w * session.info.scale
    x = deterministic_input((n, session.input_spec.channels, h, w))  # 1 for a gray model
    upscaler = Upscaler(session, cfg.settings.tiling)
    # "auto": the tile the memory budget allows for this size (0 = whole); the full path holds its output
    tile = upscaler.resolve_tile(h, w, streamed=False)
    model_only = _model_only(session, x, tile, upscaler.tile_pad, cfg.batch)

    # The checksum comes from the first call: one inference on the deterministic input.
    y = model_only()
    checksum = output_checksum(y)
    tiling = upscaler.describe() if upscaler.settings.auto else f"tile {tile or 'off'}"
    log(f"bench: {session.backend} {session.precision} on {session.device}, input {n}x{x.shape[1]}x{h}x{w}, "
        f"{tiling}; output checksum {checksum:.6f}")
    lat = time_calls(model_only, warmup=max(0, cfg.warmup - 1), iters=cfg.iters,
                     desc="model only" if progress else None)
    results: dict = {"model_only": summarize(lat, frames=n, out_pixels_per_frame=out_px)}
    log(_line("model only", results["model_only"]))

    if cfg.full_path:
        images = deterministic_images(n, h, w)
        lat = time_calls(lambda: upscale_frames(upscaler, images), warmup=cfg.warmup, iters=cfg.iters,
                         desc="full path" if progress else None)
        results["full_path"] = summarize(lat, frames=n, out_pixels_per_frame=out_px)
        log(_line("full path", results["full_path"]))

    if torch_runner is not None:
        results["compare_torch"] = _compare_torch(cfg, x, y, model_only, torch_runner, out_px, log)

    compare = (_compare_models(cfg, session, x, model_only, out_px, log, tile, upscaler.tile_pad)
               if cfg.compare else None)
    gflops = _gflops(cfg, session, results["model_only"], compare, log)

    if cfg.video is not None:
        results["video"] = _video_mode(cfg, upscaler, results["model_only"], log)
    return _result(cfg, session, results, checksum, tile, upscaler.tile_pad, compare, gflops)


def _model_only(session, x: np.ndarray, tile, tile_pad: int, batch: int) -> Callable[[], np.ndarray]:
    """One model-only call on ``x``: ``session.infer``, or tile by tile when the tile is smaller than it."""
    from .tiling import tiled_infer

    if not _tiling_applies(tile, x.shape[2], x.shape[3]):
        return lambda: session.infer(x)
    return lambda: np.stack([tiled_infer(session, img, tile=tile, tile_pad=tile_pad, batch=batch) for img in x])


def _result(cfg: BenchConfig, session, results: dict, checksum: float, tile, tile_pad: int,
            compare: list[dict] | None, gflops: dict | None) -> dict:
    """The result object of the schema from the measurements."""
    details = getattr(session, "details", {}) or {}
    # Thread counts as the adapter recorded them; absent = the backend's default (all cores).
    threads = {key: int(details[f"{key}_threads"]) for key in ("intra_op", "inter_op")
               if isinstance(details.get(f"{key}_threads"), int)}
    model_path = Path(cfg.model)
    model = {"path": str(model_path), "sha256": sha256_file(model_path) if model_path.is_file() else "",
             "scale": int(session.info.scale)}
    if getattr(session.info, "arch", ""):
        model["arch"] = session.info.arch
    # the schema (shared with the C++ srbench) has one tile size: a chosen (h, w) core records its larger side
    input_ = {"batch": cfg.batch, "channels": session.input_spec.channels, "height": cfg.height, "width": cfg.width,
              "tile": int(max(tile) if isinstance(tile, tuple) else tile or 0), "tile_pad": int(tile_pad)}
    return {
        "schema": SCHEMA_ID,
        "tool": TOOL,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "model": model,
        "backend": session.backend,
        "device": session.device,
        "precision": session.precision,
        "providers": [str(p) for p in details.get("providers", [])],
        "threads": threads,
        "input": input_,
        "warmup": cfg.warmup,
        "iters": cfg.iters,
        "results": results,
        "output_checksum": checksum,
        **({"compare": compare} if compare is not None else {}),
        **({"gflops": gflops} if gflops is not None else {}),
        "machine": machine_info(session.device),
        "versions": library_versions({k: v for k, v in (details.get("versions") or {}).items()}),
    }


def _line(name: str, timing: dict) -> str:
    lat = timing["latency_ms"]
    return (f"  {name:<12} median {lat['median']:9.2f} ms  p90 {lat['p90']:9.2f} ms  "
            f"{timing['fps']:8.2f} fps  {timing['megapixels_per_s']:8.3f} MP/s (output)")


def _compare_models(cfg, session, x, model_only, out_px, log, tile, tile_pad) -> list[dict]:
    """Time the main model and every ``--compare`` model in alternating blocks, same input and threads.

    Returns the ``compare`` list of the result: the main model first (speedup 1), then each
    comparison with its fps and speedup against the main model in this same run.
    """
    from .open import open_session

    others = []
    try:
        for spec in cfg.compare:
            model, backend, precision = parse_compare(spec)
            others.append((model, open_session(model, backend=backend, precision=precision, threads=cfg.threads)))
        fns = {"main": model_only}
        for i, (_, s) in enumerate(others):
            fns[f"c{i}"] = _model_only(s, x, tile, tile_pad, cfg.batch)
            fns[f"c{i}"]()  # first call (shape compilation) outside the timing
        log(f"bench: timing the main model and {len(others)} comparison(s) in alternating blocks "
            f"({cfg.iters} calls each)")
        times = time_alternating(fns, warmup=max(0, cfg.warmup - 1), iters=cfg.iters)
        main = summarize(times["main"], frames=cfg.batch, out_pixels_per_frame=out_px)
        entries = [{"model": str(cfg.model), "backend": session.backend, "device": session.device,
                    "precision": session.precision, "role": "main", "fps": main["fps"], "speedup": 1.0,
                    "latency_ms": main["latency_ms"], "flops_per_pixel": session.info.flops_per_pixel or None}]
        log(f"  {'main':<8} {session.backend:<12} {session.precision:<5} {main['fps']:8.3f} fps  1.00x  {cfg.model}")
        for i, (model, s) in enumerate(others):
            t = summarize(times[f"c{i}"], frames=cfg.batch, out_pixels_per_frame=out_px)
            speedup = t["fps"] / main["fps"] if main["fps"] > 0 else float("inf")
            ran = getattr(s, "path", None) or model  # the file that ran (auto may pick the INT8 sibling)
            entries.append({"model": str(ran), "backend": s.backend, "device": s.device, "precision": s.precision,
                            "role": "compare", "fps": t["fps"], "speedup": speedup, "latency_ms": t["latency_ms"],
                            "flops_per_pixel": s.info.flops_per_pixel or None})
            log(f"  {'compare':<8} {s.backend:<12} {s.precision:<5} {t['fps']:8.3f} fps  {speedup:.2f}x  {ran}")
    finally:
        for _, s in others:
            s.close()
    return entries


def _gflops(cfg, session, model_only: dict, compare: list[dict] | None, log) -> dict | None:
    """Achieved GFLOP/s (FLOPs per LR pixel from the model's metadata) and, with ``peak``, the
    fraction of the machine's measured FP32 FMA peak. None when the model lacks the count."""
    fpp = session.info.flops_per_pixel
    lr_px = cfg.height * cfg.width
    out: dict = {}
    if fpp:
        out = {"flops_per_pixel": fpp, "model_only": fpp * lr_px * model_only["fps"] / 1e9}
    else:
        log("bench: GFLOP/s not reported: the model's metadata has no srdeploy.flops_per_pixel (re-export it)")
    if cfg.peak:
        from .cpp_bench import measure_peak

        peak = measure_peak(cfg.threads)
        out["peak"] = peak
        if fpp:
            out["fraction_of_peak"] = out["model_only"] / peak["gflops"]
    for e in compare or []:
        if e.get("flops_per_pixel"):
            e["gflops"] = e["flops_per_pixel"] * lr_px * e["fps"] / 1e9
            if cfg.peak:
                e["fraction_of_peak"] = e["gflops"] / out["peak"]["gflops"]
    if not out:
        return None
    line = f"bench: {out['model_only']:.1f} GFLOP/s ({fpp / 1e6:.3f} MFLOP per LR pixel)" if fpp else "bench:"
    if cfg.peak:
        p = out["peak"]
        line += (f"; FP32 FMA peak {p['gflops']:.1f} GFLOP/s ({p['isa']}, {p['threads']} threads, srbench --peak)")
        if fpp:
            line += f": {100 * out['fraction_of_peak']:.0f}% of peak"
    log(line)
    for e in compare or []:
        if "gflops" in e:
            log(f"  {e['backend']} {e['precision']} {e['model']}: {e['gflops']:.1f} GFLOP/s"
                + (f", {100 * e['fraction_of_peak']:.0f}% of peak" if "fraction_of_peak" in e else ""))
    return out


def _compare_torch(cfg, x, y_ours, model_only, torch_runner, out_px, log) -> dict:
    fn, info = torch_runner
    y_torch = fn(x)
    diff = float(np.max(np.abs(y_torch.astype(np.float32) - y_ours))) if y_torch.shape == y_ours.shape else None
    if diff is None or diff > 1e-3:
        log(f"bench: warning: the PyTorch checkpoint's output differs from the model's "
            f"(max abs {diff if diff is not None else 'shape ' + str(y_torch.shape)}): are they the same model?")
    log(f"bench: timing ours and PyTorch eager in alternating blocks ({cfg.iters} calls each)")
    times = time_alternating({"ours": model_only, "torch": lambda: fn(x)}, warmup=cfg.warmup, iters=cfg.iters)
    ours = summarize(times["ours"], frames=cfg.batch, out_pixels_per_frame=out_px)
    ref = summarize(times["torch"], frames=cfg.batch, out_pixels_per_frame=out_px)
    speedup = ours["fps"] / ref["fps"] if ref["fps"] > 0 else float("inf")
    log(_line("ours (alt.)", ours))
    log(_line("torch eager", ref))
    log(f"  speed ratio ours / PyTorch eager (unfused, fp32): {speedup:.2f}x")
    return {"checkpoint": str(cfg.compare_torch), "ours": ours, "torch": ref, "speedup": speedup,
            "max_abs_diff": diff, **info}


def _video_mode(cfg, upscaler, model_only: dict, log) -> dict:
    import tempfile

    from .media import ffmpeg as ff
    from .media.segments import upscale_video_ffmpeg
    from .media.video import write_test_video

    log(f"bench: video mode ({cfg.video or f'synthetic, {cfg.video_frames} frames'})")
    with tempfile.TemporaryDirectory(prefix="srdeploy-bench-") as tmp:
        src = cfg.video
        if not src:
            src = str(Path(tmp) / "synthetic.mp4")
            write_test_video(src, width=cfg.width, height=cfg.height, frames=cfg.video_frames, fps=25.0)
        dst = str(Path(tmp) / ("out" + (Path(src).suffix if Path(src).suffix in (".mp4", ".mkv", ".mov")
                                        else ".mp4")))
        # Time the session calls inside the run too: frames / (time in session.infer) is the
        # model-only fps of this very run, so busy = e2e / that is immune to background load
        # drifting between the separate model-only timing and the video run.
        session = upscaler.session
        busy = [0.0]
        plain_infer = session.infer

        def timed_infer(x):
            t0 = time.perf_counter()
            try:
                return plain_infer(x)
            finally:
                busy[0] += time.perf_counter() - t0

        session.infer = timed_infer  # instance attribute shadows the method for this run only
        try:
            # The default `srdeploy video` path: ffmpeg decode -> model -> ffmpeg H.264 (CRF 18, medium)
            stats = upscale_video_ffmpeg(upscaler, src, dst, batch=cfg.batch, progress=False, audio=False,
                                         log=lambda s: None)
        finally:
            del session.infer
        # ffmpeg's encoder alone at the output size, same settings: on a fast GPU this, not the
        # model, can bound the end-to-end fps.
        settings = ff.encoder_settings(dst)
        encode_fps = ff.encode_fps(stats.width, stats.height, settings, frames=max(30, stats.frames), work=Path(tmp))
    ratio = stats.fps / model_only["fps"] if model_only["fps"] > 0 else 0.0
    in_run = stats.frames / busy[0] if busy[0] > 0 else 0.0
    busy_fraction = stats.fps / in_run if in_run > 0 else 0.0
    size = (stats.source_width, stats.source_height)
    log(f"  video        {stats.frames} frames {size[0]}x{size[1]} -> {stats.width}x{stats.height} in "
        f"{stats.seconds:.2f} s: {stats.fps:.2f} fps end to end = {100 * ratio:.1f}% of model-only fps"
        + ("" if size == (cfg.width, cfg.height) else
           f" (warning: model-only was timed at {cfg.width}x{cfg.height}; pass --size {size[0]}x{size[1]})"))
    log(f"               whole job incl. probe and final join/mux: {stats.total_seconds:.2f} s = "
        f"{stats.frames / stats.total_seconds:.2f} fps")
    log(f"               ffmpeg encode alone ({settings.describe()}) at {stats.width}x{stats.height}: "
        f"{encode_fps:.1f} fps = {encode_fps / stats.fps if stats.fps else 0:.1f}x the end-to-end fps")
    log(f"               same run: session.infer busy {busy[0]:.2f} s of {stats.seconds:.2f} s = "
        f"{100 * busy_fraction:.1f}% (end-to-end fps / model-only fps measured inside the video run)")
    return {"source": cfg.video or "synthetic", "frames": stats.frames, "width": size[0], "height": size[1],
            "out_width": stats.width, "out_height": stats.height, "batch": cfg.batch,
            "seconds": stats.seconds, "fps": stats.fps, "total_seconds": stats.total_seconds,
            "model_only_fps": model_only["fps"], "ratio_to_model_only": ratio, "codec": stats.codec,
            "encoder": "ffmpeg", "encode_only_fps": encode_fps,
            "infer_seconds": busy[0], "model_only_fps_in_run": in_run, "ratio_in_run": busy_fraction}


def torch_reference(checkpoint: str, threads: int | None):
    """The PyTorch baseline for ``bench --compare-torch``: eager, FP32, BatchNorm NOT folded, CPU.

    Opened through the torch backend entry point with ``fold_bn=False`` (the training model as it
    is), so the runtime imports neither torch nor srdeploy.train itself.

    Args:
        checkpoint: srdeploy training checkpoint (.pt), loaded with weights_only=True.
        threads: torch intra-op threads (None = torch's default, like ONNX Runtime's: all cores).

    Returns:
        (callable float32 NCHW numpy -> float32 NCHW numpy, info dict for the JSON).
    """
    from .open import open_session

    session = open_session(checkpoint, backend="torch", device="cpu", precision="fp32", threads=threads,
                           fold_bn=False, use_ema=True)
    info = {"torch_version": str(session.details.get("torch_version")), "torch_threads": session.details.get("threads"),
            "mode": "eager", "precision": "fp32", "batchnorm_layers_unfolded": session.details["batchnorm_layers"]}
    return session.infer, info
