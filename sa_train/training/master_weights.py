"""Where DeepSpeed keeps the fp32 master weights on each rank, and how to gather them on rank 0.

Every optimizer wrapper keeps this rank's fp32 master weights as a few flat tensors ("partitions"):

    ZeRO-1/2 (DeepSpeedZeroOptimizer)  single_partition_of_fp32_groups[g]: a 1/world slice of the
                                       group's flat buffer, params laid end to end (with alignment)
    ZeRO-0 + bf16 (BF16_Optimizer)     fp32_groups_flat_partition[g]: the same layout
    ZeRO-3 (Stage3)                    fp32_partitioned_groups_flat[g]: each param's own 1/world
                                       slice (``ds_tensor``), slices laid end to end
    ZeRO-0 + fp16 (FP16_Optimizer)     fp32_groups_flat[g]: the whole group on every rank
                  (FP16_Unfused...)    fp32_groups[g]: a whole fp32 tensor per parameter
    ZeRO-0, fp32 (plain optimizer)     the module's parameters themselves, full on every rank
                                       (the last three are replicated: each rank owns a
                                       contiguous 1/world share of the groups by size)

:class:`MasterPartitions` hides the difference: ``local()`` is this rank's list of fp32 tensors (live:
the optimizer updates them in place), :meth:`gather` turns a list shaped like it (the master itself,
or an EMA of it) into full named tensors on rank 0 only, and :meth:`local_slice` cuts this rank's
part out of full named tensors (to resume). Only whole partitions move, in chunks, with one
``gather`` per chunk: no rank but 0 ever holds a full tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist

# Elements rank 0 receives per gather call, all ranks' pieces together (512 MB of fp32): bounds the
# transient device memory of a checkpoint's gather however many ranks there are.
GATHER_BUDGET_ELEMENTS = 1 << 27
GATHER_MIN_CHUNK = 1 << 20  # elements per rank per call: fewer, larger messages


@dataclass(frozen=True)
class Slot:
    """One parameter inside a partitioned group.

    ``offset``: where it starts in the group's full flat buffer (flat layouts) or in each rank's
    partition (per-param layout, ZeRO-3); ``span``: its numel (flat) or its partition's numel (ZeRO-3).
    """

    name: str
    shape: torch.Size
    offset: int
    span: int

    @property
    def numel(self) -> int:
        return int(torch.Size(self.shape).numel())


class MasterPartitions:
    """This rank's fp32 master partitions of one DeepSpeed engine and their layout.

    Args:
        groups: per group, the parameters it holds.
        local: returns this rank's tensors, one per group (read at every call, since DeepSpeed may
            replace them on load).
        per_param: ZeRO-3's layout (each param split across ranks) instead of flat slices.
        replicated: every rank holds every group whole (ZeRO-0 in fp32); each rank owns the groups
            :func:`shares` gives it, and ``local`` then returns this rank's own groups only.
    """

    def __init__(self, groups: list[list[Slot]], local: Callable[[], list[torch.Tensor]], world: int, rank: int,
                 per_param: bool = False, replicated: bool = False):
        self.groups, self._local, self.world, self.rank = groups, local, world, rank
        self.per_param, self.replicated = per_param, replicated
        self.names = [slot.name for group in groups for slot in group]
        self.owners = shares([sum(slot.numel for slot in group) for group in groups], world) if replicated else None

    def local(self) -> list[torch.Tensor]:
        """This rank's fp32 master tensors (live views of the optimizer's, or of the module's)."""
        tensors = list(self._local())
        if self.owners is None:
            return tensors
        return [t for t, owner in zip(tensors, self.owners) if owner == self.rank]

    def _owned_groups(self, rank: int) -> list[list[Slot]]:
        if self.owners is None:
            return self.groups
        return [group for group, owner in zip(self.groups, self.owners) if owner == rank]

    def numel_on_this_rank(self) -> int:
        return sum(t.numel() for t in self.local())

    def gather(self, tensors: list[torch.Tensor]) -> Optional[dict[str, torch.Tensor]]:
        """Full fp32 CPU tensors by name on rank 0 from ``tensors`` laid out as :meth:`local`
        (the master, or an EMA of it); None on the other ranks. Collective: every rank calls it."""
        if self.owners is not None:
            return self._gather_shares(tensors)
        out: dict[str, torch.Tensor] = {}
        for group, tensor in zip(self.groups, tensors):
            rows = _gather_rows(tensor.detach(), self.world, self.rank)  # (world, partition) on rank 0
            if rows is None:
                continue
            flat = rows.reshape(-1)
            for slot in group:
                if self.per_param:
                    full = rows[:, slot.offset:slot.offset + slot.span].reshape(-1)[:slot.numel]
                else:
                    full = flat[slot.offset:slot.offset + slot.numel]
                out[slot.name] = full.reshape(slot.shape).clone()
        return out if self.rank == 0 else None

    def local_slice(self, read: Callable[[str], torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's part of full named tensors (``read(name)`` gives one, e.g. from a file), laid
        out as ``like`` (this rank's partitions: padding keeps their values)."""
        out = [t.detach().clone() for t in like]
        for group, tensor in zip(self._owned_groups(self.rank), out):
            if self.owners is not None:
                for slot in group:
                    tensor.reshape(-1)[slot.offset:slot.offset + slot.numel].copy_(read(slot.name).reshape(-1))
                continue
            size = tensor.numel()
            for slot in group:
                full = read(slot.name).reshape(-1).to(tensor.dtype)
                if full.numel() != slot.numel:
                    raise ValueError(f"tensor {slot.name!r} has {full.numel()} elements; the model's has {slot.numel}")
                if self.per_param:  # this rank's slice of the param, zero-padded at the end
                    start = self.rank * slot.span
                    piece = full[start:start + slot.span]
                    tensor[slot.offset:slot.offset + piece.numel()].copy_(piece)
                    continue
                begin, end = max(slot.offset, self.rank * size), min(slot.offset + slot.numel, (self.rank + 1) * size)
                if begin < end:
                    tensor[begin - self.rank * size:end - self.rank * size].copy_(full[begin - slot.offset:end - slot.offset])
        return out

    def _gather_shares(self, tensors: list[torch.Tensor]) -> Optional[dict[str, torch.Tensor]]:
        """Replicated layout: every rank packs its own groups into one flat row (padded to the
        largest share), rank 0 unpacks every rank's row."""
        sizes = [sum(_group_numel(group) for group in self._owned_groups(r)) for r in range(self.world)]
        row = torch.zeros(max(sizes), dtype=torch.float32, device=tensors[0].device if tensors else "cpu")
        if tensors:
            torch.cat([t.detach().reshape(-1).float() for t in tensors], out=row[:sizes[self.rank]])
        rows = _gather_rows(row, self.world, self.rank)
        if rows is None:
            return None
        out: dict[str, torch.Tensor] = {}
        for rank in range(self.world):
            start = 0
            for group in self._owned_groups(rank):
                for slot in group:
                    begin = start + slot.offset
                    out[slot.name] = rows[rank, begin:begin + slot.numel].reshape(slot.shape).clone()
                start += _group_numel(group)
        return {name: out[name] for name in self.names}


def _group_numel(group: list[Slot]) -> int:
    return max(slot.offset + slot.numel for slot in group)


def shares(sizes: list[int], world: int) -> list[int]:
    """The owner rank of each of ``sizes`` (in order): contiguous runs of about total / world each."""
    total, owners, before = max(1, sum(sizes)), [], 0
    for size in sizes:
        owners.append(min(world - 1, (before + size // 2) * world // total))
        before += size
    return owners


def _comm_device(tensor: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if tensor.device.type != "cpu" else tensor.device


def _gather_rows(tensor: torch.Tensor, world: int, rank: int) -> Optional[torch.Tensor]:
    """(world, numel) fp32 CPU matrix of every rank's ``tensor`` on rank 0 (equal sizes), None elsewhere."""
    flat = tensor.reshape(-1)
    if world == 1 or not (dist.is_available() and dist.is_initialized()):
        return flat.float().cpu().unsqueeze(0)
    device = _comm_device(flat)
    chunk = max(GATHER_MIN_CHUNK, GATHER_BUDGET_ELEMENTS // world)
    rows = torch.empty(world, flat.numel(), dtype=torch.float32) if rank == 0 else None
    for start in range(0, flat.numel(), chunk):
        piece = flat[start:start + chunk].to(device=device, dtype=torch.float32).contiguous()
        if rank == 0:
            pieces = [torch.empty_like(piece) for _ in range(world)]
            dist.gather(piece, gather_list=pieces, dst=0)
            for source, received in enumerate(pieces):
                rows[source, start:start + piece.numel()].copy_(received)
        else:
            dist.gather(piece, dst=0)
    return rows


def master_partitions(engine) -> MasterPartitions:
    """The fp32 master partitions of a DeepSpeed engine's trainable parameters (see the module doc)."""
    optimizer = engine.optimizer
    names = {id(p): n for n, p in engine.module.named_parameters()}
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    stage = engine.zero_optimization_stage()

    if stage == 3:
        groups = []
        for params in optimizer.fp16_groups:
            slots, offset = [], 0
            for p in params:
                slots.append(Slot(names[id(p)], p.ds_shape, offset, p.partition_numel()))
                offset += p.partition_numel()
            groups.append(slots)
        return MasterPartitions(groups, lambda: list(optimizer.fp32_partitioned_groups_flat), world, rank, per_param=True)
    if stage in (1, 2):
        groups = [[Slot(names[id(p)], p.shape, offset, p.numel()) for p, offset in zip(params, offsets)]
                  for params, offsets in zip(optimizer.round_robin_bit16_groups, optimizer.round_robin_bit16_offsets)]
        return MasterPartitions(groups, lambda: list(optimizer.single_partition_of_fp32_groups), world, rank)
    if hasattr(optimizer, "fp32_groups_flat_partition"):  # ZeRO-0 with bf16: DeepSpeed's BF16_Optimizer
        groups = [_end_to_end(params, names) for params in optimizer.bf16_groups]
        return MasterPartitions(groups, lambda: list(optimizer.fp32_groups_flat_partition), world, rank)
    if hasattr(optimizer, "fp32_groups_flat"):  # ZeRO-0 with fp16: FP16_Optimizer, a whole fp32 copy per rank
        groups = [_end_to_end(params, names) for params in optimizer.fp16_groups]
        return MasterPartitions(groups, lambda: list(optimizer.fp32_groups_flat), world, rank, replicated=True)
    if hasattr(optimizer, "fp32_groups") and hasattr(optimizer, "fp16_groups"):  # fp16, FP16_UnfusedOptimizer
        groups = [_end_to_end([p], names) for params in optimizer.fp16_groups for p in params]
        return MasterPartitions(groups, lambda: [t for group in optimizer.fp32_groups for t in group], world, rank,
                                replicated=True)
    params = [p for p in engine.module.parameters() if p.requires_grad]
    groups = [_end_to_end([p], names) for p in params]
    return MasterPartitions(groups, lambda: [p.data for p in params], world, rank, replicated=True)


def _end_to_end(params: list[torch.nn.Parameter], names: dict[int, str]) -> list[Slot]:
    """Slots of parameters laid end to end in one flat buffer, without padding between them."""
    slots, offset = [], 0
    for p in params:
        slots.append(Slot(names[id(p)], p.shape, offset, p.numel()))
        offset += p.numel()
    return slots
