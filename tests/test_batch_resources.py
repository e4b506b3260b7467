"""batch.resources: how many workers fit a machine or a Ray cluster (issue 25 item 13; no Ray needed)."""

from __future__ import annotations

import pytest

from srdeploy.runtime.batch import resources
from srdeploy.runtime.budget import format_size


def test_item13_slots_count_cores_memory_and_gpus(monkeypatch):
    monkeypatch.setattr(resources, "usable_cores", lambda: 8)
    assert resources.check_machine(resources.Demand(cpus=2), 4, 3 << 30) == 8  # the local instance gets the cores
    with pytest.raises(RuntimeError) as e:
        resources.check_machine(resources.Demand(cpus=1, memory=1 << 30), 100000, 3 << 30)
    assert str(e.value) == (f"batch: --workers 100000 do not fit this machine: each worker reserves 1 CPU "
                            f"(--threads-per-worker) and {format_size(1 << 30)} of RAM (the --tile auto budget, "
                            f"--max-memory); this machine has 8 usable core(s) and {format_size(3 << 30)} of "
                            "available RAM, room for 3; use --workers 3 or fewer, lower --max-memory, or attach to "
                            "a larger Ray cluster with --address")
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 4.0}},
             {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    resources.check_cluster(nodes, resources.Demand(cpus=2, gpus=0.5), 4, "the cluster")  # 4 on the GPU node
    with pytest.raises(RuntimeError, match=r"--workers 5 do not fit the cluster: .*its 2 node\(s\) have 8 CPU/2 GPU, "
                                           r"4 CPU/0 GPU, room for 4; use --workers 4 or fewer"):
        resources.check_cluster(nodes, resources.Demand(cpus=2, gpus=0.5), 5, "the cluster")
    resources.check_cluster(nodes, resources.Demand(cpus=2, memory=1 << 40), 6, "the cluster")  # Ray places by CPU


def test_worker_demand_counts_the_tile_budget_only_where_it_is_ram(monkeypatch):
    from srdeploy.runtime.settings import TileSettings

    monkeypatch.setattr(resources, "usable_cores", lambda: 8)
    # the default budget, 1 GiB or half the available RAM, from the one reading the check uses too
    assert resources.worker_demand(1, 0, "cpu", TileSettings(), ram=3 << 29).memory == 3 << 28
    assert resources.worker_demand(1, 0, "cpu", TileSettings(), ram=64 << 30).memory == 1 << 30
    demand = resources.worker_demand(1, 0, "cpu", TileSettings(), ram=(3 << 29) - 4096)
    assert resources.check_machine(demand, 2, (3 << 29) - 4096) == 8  # two workers of half each fit (no raise)
    assert resources.worker_demand(2, 0, "cpu", TileSettings(max_memory=3 << 20)) == resources.Demand(2, 0, 3 << 20)
    assert resources.worker_demand(1, 0, "cpu", TileSettings(tile=64)).memory == 0  # a fixed tile: no budget
    assert resources.worker_demand(1, 1, "cuda", TileSettings(max_memory=3 << 20)).memory == 0  # on the GPU
