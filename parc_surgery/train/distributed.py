"""One process or many under torchrun: the process group, DDP, and rank-0-only output.

torchrun (or `python -m torch.distributed.run`) sets RANK, LOCAL_RANK, WORLD_SIZE and
the rendezvous variables; without them the run is a single process and needs none of it.
The backend is nccl on CUDA and gloo on CPU. Metrics are all-reduced, so every rank
knows the same numbers; only rank 0 prints and writes files.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from parc_surgery.errors import UsageError

__all__ = ["Distributed", "DEVICES", "all_reduce_sum", "init_distributed", "unwrap"]

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Distributed:
    """This process's place in the run: rank, world size and the device it computes on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialised: bool = False  # whether this object created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module, *, sync_bn: bool = False) -> nn.Module:
        """DistributedDataParallel around `module` when there are several processes."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if sync_bn:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        # A ParC 'W' weight is (C, 1, 1, K); its gradient comes back with other strides on
        # the size-1 axes, which DDP reports although the memory layout is the same.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on one of them (a stop request)."""
        if not self.active:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialised = False


def _choose_device(device: str, local_rank: int) -> torch.device:
    if device not in DEVICES:
        raise UsageError(f"--device {device!r} is not one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available", hint="use --device cpu")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> Distributed:
    """Read torchrun's environment; join the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _choose_device(device, local_rank)
    if world <= 1:
        return Distributed(device=chosen)
    import torch.distributed as dist

    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
        return Distributed(rank, local_rank, world, chosen, initialised=True)
    return Distributed(rank, local_rank, world, chosen)


def all_reduce_sum(values: torch.Tensor, info: Distributed) -> torch.Tensor:
    """The element-wise sum of `values` over all ranks (float64 so counts stay exact)."""
    total = values.detach().to(device=info.device, dtype=torch.float64)
    if info.active:
        import torch.distributed as dist

        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.cpu()


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (state_dict keys without `module.`)."""
    return getattr(module, "module", module)
