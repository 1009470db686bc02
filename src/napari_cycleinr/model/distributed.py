"""Several processes, one job: torchrun-launched training (DDP) and folder processing split across ranks.

`torchrun --nproc_per_node N ...` sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (and the rendezvous
address); `from_environment` turns them into a Rank and an initialised process group: NCCL with one GPU per
process where CUDA is used, gloo on the CPU. Without those variables (or with WORLD_SIZE=1) everything runs as
a single ordinary process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from napari_cycleinr.errors import CycleINRError

T = TypeVar("T")


@dataclass(frozen=True)
class Rank:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    owns_group: bool
    """Whether from_environment created the process group (and so close() destroys it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's value on every rank (any picklable object)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's value, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.barrier()  # nobody tears the group down while another rank still talks through it
            dist.destroy_process_group()


def world_size_from_environment() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise CycleINRError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def from_environment(device: torch.device) -> Rank | None:
    """The Rank of this process when started by torchrun with more than one process, else None.

    On CUDA each process takes the GPU of its LOCAL_RANK; asking for CUDA with fewer GPUs than local
    processes is an error rather than several processes sharing one device by accident.
    """
    world = world_size_from_environment()
    if world <= 1:
        return None
    try:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except (KeyError, ValueError):
        raise CycleINRError("WORLD_SIZE > 1 needs RANK and LOCAL_RANK: start the job with torchrun") from None
    if device.type == "cuda":
        if torch.cuda.device_count() < local_world:
            raise CycleINRError(
                f"{local_world} processes on this node but only {torch.cuda.device_count()} CUDA GPU(s); "
                "use --nproc_per_node at most the number of GPUs, or --device cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
    return Rank(rank, world, local_rank, local_world, device, owns)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share of a list: every world_size-th item from position rank (disjoint, covering)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return list(items[rank::world_size])


def rank_and_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from the environment, (0, 1) outside torchrun; no process group needed."""
    world = world_size_from_environment()
    if world <= 1:
        return 0, 1
    try:
        rank = int(os.environ["RANK"])
    except (KeyError, ValueError):
        raise CycleINRError("WORLD_SIZE > 1 needs RANK: start the job with torchrun") from None
    if not 0 <= rank < world:
        raise CycleINRError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return rank, world


def threads_per_process(local_world_size: int) -> int:
    """CPU threads for each of the processes sharing this machine."""
    from napari_cycleinr.runtime.threads import available_cores

    return max(1, available_cores() // max(1, local_world_size))


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, bytes): equal iff the weights are."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(data.shape)).encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
