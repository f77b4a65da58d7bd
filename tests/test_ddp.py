"""DistributedDataParallel over FusedInception: 2 CPU processes, gloo, loopback only.

Each rank trains one step of a small paper-form model on its half of the batch; DDP averages
the gradients. They must equal the gradients of the same model, unfused, in one process on the
full batch (float64, so the comparison is tight).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from helpers import assert_close_rel, free_port, randomize_block, spawn_and_join
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fused_inception import FusedInception, Inception, fuse_inception, unfuse_inception

WORLD_SIZE = 2
BATCH = 4  # 2 per rank
TIMEOUT_S = 90


class _Net(nn.Module):
    """Stem conv, two paper-form Inception blocks (5x5 and 3x3 branch3), classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block1 = Inception(8, 4, 4, 6, 2, 3, 3, branch3_kernel=5, norm=False)
        self.block2 = Inception(16, 5, 3, 4, 2, 3, 2, branch3_kernel=3, norm=False)
        self.fc = nn.Linear(14, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(torch.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(BATCH, 3, 6, 7, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, 3, (BATCH,), generator=gen)


def _model() -> nn.Module:
    return randomize_block(_Net(), seed=20).double().train()


def _worker(rank: int, port: int, out_dir: str) -> None:
    # Loopback only: the rendezvous address, and gloo's transport on the lo interface.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        model = fuse_inception(_model(), backend="cpu")
        assert sum(isinstance(m, FusedInception) for m in model.modules()) == 2
        grad_fns = []
        model.block1.register_forward_hook(lambda m, i, out: grad_fns.append(out.grad_fn))
        ddp = DistributedDataParallel(model)
        x, target = _data()
        shard = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        loss = nn.functional.cross_entropy(ddp(x[shard]), target[shard])
        assert "inception_block" in type(grad_fns[0]).__name__  # the fused operator ran
        loss.backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        torch.save(grads, os.path.join(out_dir, f"grads{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_processes_matches_single_process_unfused(tmp_path):
    spawn_and_join(_worker, (free_port(), str(tmp_path)), WORLD_SIZE, TIMEOUT_S)

    model = unfuse_inception(_model())
    assert not any(isinstance(m, FusedInception) for m in model.modules())
    x, target = _data()
    nn.functional.cross_entropy(model(x), target).backward()
    ranks = [torch.load(tmp_path / f"grads{r}.pt") for r in range(WORLD_SIZE)]
    names = [name for name, _ in model.named_parameters()]
    assert all(list(g) == names for g in ranks)
    for name, p in model.named_parameters():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # allreduced
        assert p.grad.abs().max() > 0, name
        assert_close_rel(ranks[0][name], p.grad, torch.float64, what=name)
