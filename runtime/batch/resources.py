"""How many workers fit: what each worker reserves, against a machine's or a Ray cluster's resources.

Every actor of a batch lives until the job ends, so an actor that Ray cannot place waits forever
(and a local Ray instance sized to an impossible request loses its raylet). The driver therefore
counts the slots first and refuses a request above them, with the numbers:

* **The local instance** (no ``--address``) is sized to the machine, not to the request: its CPU
  count is the cores this process may use (affinity mask and cgroup CPU quota). The check runs
  before Ray starts, against those cores and the available RAM.
* **A cluster** (``--address``, or a Ray already running in this process) is checked after
  attaching, node by node, against the resources its live nodes report to Ray.

A worker reserves ``--threads-per-worker`` CPUs and ``--gpus-per-worker`` GPUs (both reserved in
Ray). On the CPU with ``--tile auto`` it may also use its tile memory budget (``--max-memory``,
default ``budget.default_budget``) for activations; the local check counts that against the
available RAM so the workers together cannot be sized past it. Ray does not reserve memory for
the actors (its logical "memory" resource is not what the budget measures), so a cluster is
checked for CPUs and GPUs only.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Demand:
    """What one worker reserves.

    Attributes:
        cpus: CPUs (``--threads-per-worker``).  gpus: GPUs (``--gpus-per-worker``; 0 = none).
        memory: RAM its tiles may use (the ``--tile auto`` budget on the CPU), bytes; 0 = not counted
            (a fixed tile, or activations on a GPU).
    """

    cpus: int
    gpus: float = 0.0
    memory: int = 0

    def slots(self, cpus: float, gpus: float = 0.0, memory: int | None = None) -> int:
        """Workers of this demand that fit in ``cpus`` CPUs, ``gpus`` GPUs and ``memory`` bytes
        (None: memory not known, not counted)."""
        n = int(cpus // self.cpus)
        if self.gpus:
            n = min(n, int(gpus // self.gpus))
        if self.memory and memory is not None:
            n = min(n, int(memory // self.memory))
        return max(n, 0)

    def describe(self) -> str:
        """"1 CPU (--threads-per-worker) and 1.00 GiB of RAM (the --tile auto budget)"."""
        from ..budget import format_size

        parts = [f"{self.cpus} CPU (--threads-per-worker)"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU (--gpus-per-worker)")
        if self.memory:
            parts.append(f"{format_size(self.memory)} of RAM (the --tile auto budget, --max-memory)")
        return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def worker_demand(threads: int, gpus: float, device: str, tiling, *, ram: int | None = None) -> Demand:
    """The ``Demand`` of one worker.

    Args:
        threads: ``--threads-per-worker``.  gpus: ``--gpus-per-worker``.
        device: the resolved device ("cpu", "cuda", ...): on a GPU the tiles' memory is the GPU's.
        tiling: the ``TileSettings``; only ``tile="auto"`` has a budget to count.
        ram: the available RAM the default budget is half of (at most 1 GiB); None reads it.
    """
    memory = 0
    if tiling.auto and not device.startswith("cuda"):
        from ..budget import default_budget

        memory = tiling.max_memory or default_budget(avail=ram)
    return Demand(cpus=threads, gpus=gpus, memory=memory)


def usable_cores() -> int:
    """The cores this process may run on: its affinity mask, capped by a cgroup CPU quota
    (containers: ``docker --cpus``, Kubernetes limits), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None for no quota."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def check_machine(demand: Demand, workers: int, ram: int | None) -> int:
    """Refuse ``workers`` above what this machine fits, before a local Ray instance starts.

    GPUs are counted after the start (Ray detects them; ``check_cluster``).

    Args:
        ram: the available RAM (``budget.available_ram``), the same reading ``worker_demand``
            took the default budget from (two readings could refuse two workers of half each).

    Returns:
        The CPUs to give the local Ray instance (the usable cores).

    Raises:
        RuntimeError: the numbers (requested, available) and what to do.
    """
    from ..budget import format_size

    cores = usable_cores()
    ram = ram if demand.memory else None
    fit = demand.slots(cores, gpus=math.inf, memory=ram)
    if fit < workers:
        have = f"{cores} usable core(s)" + (f" and {format_size(ram)} of available RAM" if ram else "")
        tight = {"--threads-per-worker": demand.cpus > 1 and cores // demand.cpus < workers,
                 "--max-memory": bool(ram) and ram // demand.memory < workers}
        raise RuntimeError(f"batch: --workers {workers} do not fit this machine: each worker reserves "
                           f"{demand.describe()}; this machine has {have}, room for {fit}; "
                           + _advice(fit, tight, "or attach to a larger Ray cluster with --address"))
    return cores


def check_cluster(nodes: list[dict], demand: Demand, workers: int, where: str) -> None:
    """Refuse ``workers`` above what the live nodes of a Ray cluster fit (CPUs and GPUs).

    Args:
        nodes: ``ray.nodes()``.  where: the cluster in words ("the Ray cluster at HOST:PORT").

    Raises:
        RuntimeError: the numbers (requested, per node) and what to do.
    """
    placed = Demand(cpus=demand.cpus, gpus=demand.gpus)  # Ray places by CPU and GPU (module docstring)
    live = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    fit = sum(placed.slots(r.get("CPU", 0), r.get("GPU", 0)) for r in live)
    if fit < workers:
        have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in live) or "nothing (no live node)"
        cpu_room = sum(r.get("CPU", 0) // demand.cpus for r in live)
        tight = {"--threads-per-worker": demand.cpus > 1 and cpu_room < workers, "--gpus-per-worker": bool(demand.gpus)}
        raise RuntimeError(f"batch: --workers {workers} do not fit {where}: each worker reserves "
                           f"{placed.describe()}; its {len(live)} node(s) have {have}, room for {fit}; "
                           + _advice(fit, tight, "or add nodes"))


def _advice(fit: int, tight: dict[str, bool], last: str) -> str:
    """What to do instead: fewer workers (when any fit), smaller reservations where they bind, ``last``."""
    steps = [f"use --workers {fit} or fewer"] if fit else []
    smaller = [flag for flag, on in tight.items() if on]
    if smaller:
        steps.append("lower " + " or ".join(smaller))
    return ", ".join(steps + [last if steps else last.removeprefix("or ")])
