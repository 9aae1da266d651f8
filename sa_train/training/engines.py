"""DeepSpeed engines and what the tasks need around them: agreement on finite losses across ranks
(with the losses' means over ranks, in the same all-reduce), and full fp32 weights under any ZeRO
stage, gathered on rank 0 only."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

import deepspeed
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from sa_train.config import ExperimentConfig
from sa_train.training.config import OptimizerConfig
from sa_train.training.deepspeed_config import build_deepspeed_config
from sa_train.training.lr_schedule import lr_multiplier

if TYPE_CHECKING:
    from sa_train.training.master_weights import MasterPartitions

logger = logging.getLogger(__name__)


def make_engine(
    model: nn.Module, cfg: ExperimentConfig, optimizer: OptimizerConfig, world_size: int, on_gpu: bool
) -> "deepspeed.DeepSpeedEngine":
    """Wrap the trainable parameters of ``model`` in a DeepSpeed engine with its optimizer and lr schedule."""
    config = build_deepspeed_config(cfg, optimizer, world_size, on_gpu)
    stage = config["zero_optimization"]["stage"]
    if world_size == 1 and stage in (1, 2) and not _offloads(config):
        # With one rank there is nothing to partition: ZeRO-1/2 would only add flat fp32 copies and
        # bucket copies every step (measured 1.46x the step time of a bare loop; benchmarks/README.md).
        logger.info("one worker: ZeRO-%d has nothing to partition, using ZeRO-0", stage)
        config["zero_optimization"] = {"stage": 0}
    schedule = lr_multiplier(cfg.training.lr_schedule, cfg.training.steps)
    params = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=params,
        config=config,
        lr_scheduler=lambda opt: LambdaLR(opt, schedule),
        dist_init_required=False,
    )
    if world_size == 1 and engine.zero_optimization_stage() == 0:
        engine.enable_backward_allreduce = False  # an all-reduce over one rank only flattens and copies
    return engine


def _offloads(config: dict) -> bool:
    zero = config["zero_optimization"]
    return "offload_optimizer" in zero or "offload_param" in zero


def agree_finite_means(values: dict[str, torch.Tensor]) -> Optional[dict[str, float]]:
    """Each value's mean over all ranks, or None when any value is non-finite on any rank (every rank
    then takes the same branch and skips the step). One all-reduce does both: the finite check and the
    global means a logged loss needs (the global batch's, not rank 0's share). Collective: every rank
    calls it with the same keys."""
    keys = sorted(values)
    local = torch.stack([values[k].detach().float().mean() for k in keys]).double()  # on the values' device
    # [1 if this rank has a non-finite value, then each value (0 where non-finite: the sum stays finite)]
    packed = torch.cat([(~torch.isfinite(local).all()).double().reshape(1),
                        torch.nan_to_num(local, nan=0.0, posinf=0.0, neginf=0.0)])
    world = 1
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        packed = packed.cuda() if dist.get_backend() == "nccl" else packed.cpu()
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    nonfinite_ranks, *sums = packed.tolist()  # the only host sync
    if nonfinite_ranks > 0.5:
        return None
    return {k: v / world for k, v in zip(keys, sums)}


def full_fp32_weights(engine, partitions: "MasterPartitions") -> Optional[dict[str, torch.Tensor]]:
    """Consolidated fp32 weights of the engine's module on rank 0, None on the other ranks
    (collective: every rank calls it).

    Trainable parameters come from the fp32 master partitions, gathered once to rank 0 (exact under
    bf16); frozen parameters and buffers from the module (frozen ones gathered under ZeRO-3).
    No rank but 0 builds a full tensor.
    """
    module = engine.module
    trained = partitions.gather(partitions.local())
    params = dict(module.named_parameters())
    trainable = set(partitions.names)
    frozen = [name for name in params if name not in trainable]
    rank0 = partitions.rank == 0
    out: dict[str, torch.Tensor] = {}
    if engine.zero_optimization_stage() == 3 and frozen:
        with deepspeed.zero.GatheredParameters([params[n] for n in frozen], modifier_rank=None):
            if rank0:
                out.update({n: params[n].detach().float().cpu().clone() for n in frozen})
    elif rank0:
        out.update({n: params[n].detach().float().cpu().clone() for n in frozen})
    if not rank0:
        return None
    assert trained is not None
    state = module.state_dict(keep_vars=True)
    ordered: dict[str, torch.Tensor] = {}
    for name in state:
        if name in trained:
            ordered[name] = trained[name]
        elif name in out:
            ordered[name] = out[name]
        else:  # a buffer: not partitioned by any ZeRO stage
            ordered[name] = state[name].detach().cpu().clone()
    return ordered
