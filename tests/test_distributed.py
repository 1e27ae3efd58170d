"""torchrun: one test of "are we a rank?" for every caller, and each rank on its own CUDA device."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("env,world", [({}, (0, 1)), ({"WORLD_SIZE": "2"}, (0, 1)), ({"RANK": "0"}, (0, 1)),
                                       ({"RANK": "0", "WORLD_SIZE": "1"}, (0, 1)),
                                       ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2))])
def test_one_predicate_decides_whether_this_is_a_torchrun_rank(monkeypatch, env, world):
    from vitcli import cluster
    from vitcli.backend import distributed

    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cluster.world() == world and cluster.under_torchrun() is (world[1] > 1)
    assert not hasattr(distributed, "under_torchrun")  # no second opinion in the backend


@pytest.mark.parametrize("device,current", [("cuda:1", "cuda:1"), ("cpu", None)])
def test_init_makes_the_rank_device_current(monkeypatch, device, current):
    """NCCL's all_gather_object works on the current device: without set_device every rank would use cuda:0."""
    import torch

    from vitcli.backend import distributed

    seen = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.append(str(d)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)  # no process group in a test
    distributed.init(device)
    assert seen == ([current] if current else [])
