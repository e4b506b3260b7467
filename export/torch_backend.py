"""PyTorch Session adapter, registered as the ``srdeploy.backends:torch`` entry point.

For users who have PyTorch and a GPU but no TensorRT, and the GPU path that can be measured
where TensorRT is absent. It rebuilds the generator from a self-describing checkpoint, folds BN
(inference-time equivalent, proven by the export tests), and reads the same contract the ONNX
metadata carries (scale, receptive radius, ranges) from the checkpoint and architecture.
The runtime never imports this module; ``srdeploy.runtime.open.open_session`` loads it through
the entry point. torch is imported lazily so that merely listing entry points stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from srdeploy.runtime.backends import parse_device
from srdeploy.runtime.backends.options import TorchOptions
from srdeploy.runtime.session import InputSpec, Session


class TorchSession(Session):
    """A checkpoint's generator on PyTorch (CPU or CUDA; FP16 on CUDA only).

    Args:
        path: srdeploy checkpoint (``.pt``).
        device: "cpu", "cuda" or "cuda:N".
        precision: "fp32" or "fp16" (CUDA only: CPU half-precision convolutions are slow or
            unsupported, so asking for them is an error rather than a silent fp32 run).
        threads: ``torch.set_num_threads`` for CPU inference (None = leave as is).
        options: ``TorchOptions``: ``use_ema`` (the checkpoint's EMA weights when present),
            ``fold_bn`` (fold BatchNorm into the convolutions, default; False runs the training
            model as it is, eager and BN unfused: the baseline ``srdeploy bench --compare-torch``
            measures deployment against), ``channels_last`` (channels-last convolutions, faster
            with tensor cores; None = on CUDA only).
    """

    backend = "torch"

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu", precision: str = "fp32",
                 threads: int | None = None, options: TorchOptions | None = None) -> None:
        super().__init__()
        import torch

        options = options or TorchOptions()
        use_ema, channels_last, fold_bn = options.use_ema, options.channels_last, options.fold_bn

        from srdeploy.train.checkpoint import load_generator

        from .fuse import fuse_bn
        from .pipeline import checkpoint_facts, model_info_for

        path = Path(path)
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"torch backend: precision must be 'fp32' or 'fp16', got {precision!r}")
        kind, index = parse_device(device, backend="torch")
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(f"torch backend: device {device!r} requested but this PyTorch "
                                   f"{torch.__version__} sees no CUDA GPU; use --device cpu")
            if index >= torch.cuda.device_count():
                raise RuntimeError(f"torch backend: {device!r} requested but only {torch.cuda.device_count()} "
                                   "CUDA device(s) exist")
        if precision == "fp16" and kind != "cuda":
            raise ValueError("torch backend: fp16 runs on CUDA only; use --precision fp32 on the CPU")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)

        model, ckpt = load_generator(path, use_ema=use_ema)  # one-line errors naming the file
        # the same contract an export of this checkpoint carries (scale, measured radius, channels,
        # size requirements), with the version that wrote it; the tile margin is measured at
        # export only, so the radius rule gives the default here
        self.info = model_info_for(model, ckpt, path, precision=precision,
                                   version=str((ckpt.get("versions") or {}).get("srdeploy", "")))
        if precision == "fp16" and not checkpoint_facts(ckpt).fp16:
            raise ValueError(f"{path}: this {ckpt['arch']} model is declared not to run in FP16 (its family's "
                             "facts); use --precision fp32")
        if fold_bn:
            model = fuse_bn(model)
        self._device = torch.device(device)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self._channels_last = kind == "cuda" if channels_last is None else channels_last
        model = model.to(self._device, self._dtype)
        if self._channels_last:
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        self._torch = torch

        out_range = getattr(model, "output_range", "clamp")
        self.input_spec = InputSpec(channels=self.info.channels)
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.precision = precision
        self.path = path
        self.details = {
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads() if kind == "cpu" else None,
            "bn_folded": fold_bn,
            "batchnorm_layers": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()),
            "ema_weights": bool(use_ema and ckpt.get("ema_state_dict")),
            "output_range_mode": out_range,
            "channels_last": self._channels_last,
            "model": str(path),
        }
        if kind == "cuda":
            self.details["gpu"] = torch.cuda.get_device_name(self._device)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(x).to(self._device, self._dtype, non_blocking=True)
            if self._channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            y = self._model(t)
            return y.float().contiguous().cpu().numpy()

    def close(self) -> None:
        self._model = None
        super().close()


def open_torch_session(path: str | os.PathLike, *, device: str = "cpu", precision: str = "fp32",
                       threads: int | None = None, options: TorchOptions | None = None) -> TorchSession:
    """Entry point ``srdeploy.backends:torch``: open a checkpoint as a Session (see TorchSession)."""
    return TorchSession(path, device=device, precision=precision, threads=threads, options=options)
