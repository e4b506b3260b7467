"""CUDA runtime calls shared by the TensorRT runtime and the engine builder (cuda-python).

One place for importing ``cudart``, checking every call's error code, reading a GPU's identity
(name, compute capability, driver) and selecting the device, so an engine's sidecar (written by
``srdeploy.export.engine``) and the runtime's check of it (``trt.check_sidecar``) read the same
values the same way. Imported lazily: nothing here runs without cuda-python and a GPU.
"""

from __future__ import annotations


def import_cudart(purpose: str = "the TensorRT backend"):
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise ModuleNotFoundError(f"{purpose} needs cuda-python: pip install 'srdeploy[gpu]'",
                                      name="cuda") from exc
    return cudart


class Cuda:
    """cuda-python runtime calls with every error code checked: ``cuda("what", rt.call(...))``."""

    def __init__(self, cudart) -> None:
        self.rt = cudart

    def __call__(self, what: str, result):
        err, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA {what} failed: {self._describe(err)}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def _describe(self, err) -> str:
        _, msg = self.rt.cudaGetErrorString(err)
        text = msg.decode() if isinstance(msg, bytes) else str(msg)
        return f"{getattr(err, 'name', err)}: {text}"

    def device_count(self) -> int:
        """Number of CUDA devices; a machine without a GPU or driver is one clear error."""
        result = self.rt.cudaGetDeviceCount()
        err = result[0] if isinstance(result, tuple) else result
        errors = self.rt.cudaError_t
        # No driver (libcuda missing: InsufficientDriver) or no device: cuda-python reports these here.
        if err in (getattr(errors, "cudaErrorNoDevice", None), getattr(errors, "cudaErrorInsufficientDriver", None)):
            raise RuntimeError(f"no CUDA device: cudaGetDeviceCount says {self._describe(err)}; this needs an NVIDIA "
                               "GPU with its driver installed (nvidia-smi lists it)")
        return int(self("cudaGetDeviceCount", result))

    def select(self, device: int) -> None:
        """Make ``device`` current for this thread (checked against the device count)."""
        count = self.device_count()
        if not 0 <= device < count:
            raise RuntimeError(f"CUDA device cuda:{device} requested but {count} CUDA device(s) exist")
        self("cudaSetDevice", self.rt.cudaSetDevice(device))

    def use(self, device: int) -> None:
        """Make ``device`` current again (cheap: no count check). Every entry point of a session calls
        it, as a CUDA thread's current device may have changed since (another session, another thread)."""
        self("cudaSetDevice", self.rt.cudaSetDevice(device))

    def identity(self, device: int) -> tuple[str, str, int | None]:
        """(GPU name, "major.minor" compute capability, CUDA driver version or None) of ``device``."""
        count = self.device_count()
        if not 0 <= device < count:
            raise RuntimeError(f"CUDA device cuda:{device} requested but {count} CUDA device(s) exist")
        prop = self("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        try:
            driver = int(self("cudaDriverGetVersion", self.rt.cudaDriverGetVersion()))
        except RuntimeError:
            driver = None
        return name, f"{prop.major}.{prop.minor}", driver

    def free_memory(self, device: int) -> int:
        """Free memory of ``device`` in bytes (cudaMemGetInfo), the budget ``--tile auto`` fits on CUDA."""
        self.select(device)
        free, _total = self("cudaMemGetInfo", self.rt.cudaMemGetInfo())
        return int(free)
