"""Meta-batches spread over processes with ``torch.distributed`` (started by ``torchrun``).

Every rank draws the same meta-batch, solves its share of the tasks, and the
summed meta-gradients are all-reduced, so N processes follow exactly the
parameters of one process with the same total meta-batch.
"""
from __future__ import annotations

import os
from typing import List, Sequence

import torch
import torch.distributed as torch_dist


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    return torch_dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1).

    The gradients are CPU tensors, so the backend is gloo even where CUDA exists (NCCL
    cannot reduce CPU tensors); ``GNN_CML_BACKEND`` overrides it.
    """
    if is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_initialized()
    torch_dist.init_process_group(backend=os.environ.get("GNN_CML_BACKEND", "gloo"))
    return True


def my_share(indices: Sequence[int]) -> List[int]:
    """This rank's tasks of a meta-batch (round-robin)."""
    return list(indices)[rank()::world_size()]


def reduce_gradients_and_stats(model: torch.nn.Module, stats: Sequence[float]) -> List[float]:
    """Sum gradients and per-task statistics over ranks (no-op in a single process)."""
    if not is_initialized():
        return list(stats)
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor(list(stats), dtype=grads[0].dtype)])
    torch_dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[offset:].tolist()


def barrier() -> None:
    if is_initialized():
        torch_dist.barrier()
