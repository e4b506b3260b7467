"""Where training runs: the device, and the process group when launched by ``torchrun``.

Under ``torchrun`` every rank takes its own slice of the crop stream (``batches.step_indices``);
rank 0 reads the start state, validates and writes while the others wait at a barrier (no
collective runs during validation, hence the long ``DIST_TIMEOUT``).
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
from torch import nn

# Rank 0 validates and saves while the other ranks wait at a barrier: allow long validations.
DIST_TIMEOUT = timedelta(minutes=60)


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available else cpu; an explicit cuda request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train: --device {name} requested but CUDA is not available; use --device cpu")
    return device


class DistInfo:
    """Rank and world size; a process group is set up when launched by torchrun.

    Args:
        device_name: the ``--device`` setting. Under torchrun, CUDA ranks use
            ``cuda:LOCAL_RANK`` with NCCL; "cpu" (or no CUDA) uses gloo.
    """

    def __init__(self, device_name: str):
        self._owns_group = False
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            use_cuda = torch.cuda.is_available() and not device_name.startswith("cpu")
            if use_cuda:
                torch.cuda.set_device(self.local_rank)
                self.device = torch.device(f"cuda:{self.local_rank}")
            else:
                self.device = torch.device("cpu")
            # A group set up by the caller (training inside a larger program) stays the caller's.
            self._owns_group = not dist.is_initialized()
            if self._owns_group:
                dist.init_process_group("nccl" if use_cuda else "gloo", timeout=DIST_TIMEOUT)
        else:
            self.device = resolve_device(device_name)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (the tensor itself when alone)."""
        if self.world == 1:
            return tensor
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / self.world

    @torch.no_grad()
    def average_buffers(self, *modules: nn.Module | None) -> None:
        """Average the floating-point buffers (BN running statistics) of modules over ranks."""
        if self.world == 1:
            return
        import torch.distributed as dist

        for module in modules:
            if module is None:
                continue
            for buf in module.buffers():
                if buf.is_floating_point():
                    dist.all_reduce(buf)
                    buf.div_(self.world)

    def from_rank0(self, fn):
        """Run ``fn`` on rank 0 (it reads the files) and give every rank its result.

        An exception on rank 0 is raised on every rank, so all stop with the same message
        instead of the others hanging in the next collective.
        """
        if self.world == 1:
            return fn()
        import torch.distributed as dist

        payload = [None, None]
        if self.is_main:
            try:
                payload[0] = fn()
            except (ValueError, OSError, RuntimeError) as exc:
                payload[1] = (type(exc).__name__, str(exc))
        dist.broadcast_object_list(payload, src=0, device=self.device if self.device.type == "cuda" else None)
        if payload[1] is not None:
            kind, message = payload[1]
            raise {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError,
                   "FileExistsError": FileExistsError}.get(kind, RuntimeError)(message)
        return payload[0]

    def close(self) -> None:
        if self.world > 1 and self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
