"""Data-parallel training on PyTorch's own engine: torchrun starts the processes, torch.distributed joins them.

A process started by torchrun (``WORLD_SIZE`` > 1 in its environment) joins the group with gloo on the CPU or
nccl on CUDA; everything else here is then a thin wrapper that is a no-op in a single process, so the engine reads
the same either way. Rank 0 alone prints and writes files; the others compute and agree.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist


def from_env() -> bool:
    """Whether this process was started by torchrun as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_setting: str) -> None:
    """Join the process group torchrun set up, once; each process gets its share of the cores or its own GPU."""
    if not from_env() or dist.is_initialized():
        return
    cuda = torch.cuda.is_available() and device_setting in ("auto", "cuda") or device_setting.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world()))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world() -> int:
    return dist.get_world_size() if active() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that prints, writes the run folder and saves checkpoints."""
    return rank() == 0


def device_for(device: torch.device) -> torch.device:
    """Each process its own GPU (by local rank); CPU processes share the CPU."""
    if active() and device.type == "cuda":
        return torch.device("cuda", local_rank())
    return device


def sum_all(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over every process (unchanged in one process)."""
    if not active():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` in every process: decisions (stop, dtype, run folder) must be the same everywhere."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_shards(shard: torch.Tensor, total: int, dim: int, device: torch.device) -> torch.Tensor:
    """The whole of a tensor whose items ``rank::world`` along ``dim`` each process computed, in item order."""
    if not active():
        return shard
    n = world()
    longest = -(-total // n)
    pad = longest - shard.shape[dim]
    if pad:
        shape = list(shard.shape)
        shape[dim] = pad
        shard = torch.cat([shard, shard.new_zeros(shape)], dim)
    moved = shard.to(device).contiguous()
    pieces = [torch.empty_like(moved) for _ in range(n)]
    dist.all_gather(pieces, moved)
    shape = list(shard.shape)
    shape[dim] = total
    out = shard.new_empty(shape)
    for r, piece in enumerate(pieces):
        count = len(range(r, total, n))
        index = [slice(None)] * len(shape)
        index[dim] = slice(r, total, n)
        out[tuple(index)] = piece.cpu().narrow(dim, 0, count)
    return out


class Shard(torch.utils.data.Sampler):
    """Items ``rank, rank + world, ...`` in order, without the padding DistributedSampler adds: validation and
    feature extraction see every item exactly once over all processes."""

    def __init__(self, length: int):
        self.indices = range(rank(), length, world())

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class Silent:
    """Stands in for the plugin hooks on ranks other than 0: every hook call does nothing."""

    def __getattr__(self, name: str):
        return lambda **kwargs: []


def torchrun_command(nproc: int, argv: list[str], nnodes: str | None = None, node_rank: int | None = None,
                     master_addr: str | None = None, master_port: int | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m runner ARGV``: what ``runner run --nproc N`` executes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
    if nnodes is None:
        command.append("--standalone")
    else:
        command += ["--nnodes", nnodes]
        command += ["--node-rank", str(node_rank)] if node_rank is not None else []
        command += ["--master-addr", master_addr] if master_addr else []
        command += ["--master-port", str(master_port)] if master_port else []
    return [*command, "-m", "runner", *argv]


def finish() -> None:
    if active():
        dist.barrier()
        dist.destroy_process_group()
