"""DeepSpeed engines and what the tasks need around them: agreement on finite losses across ranks,
and full fp32 weights under any ZeRO stage, gathered on rank 0 only."""

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


def agree_all_finite(*values: torch.Tensor) -> bool:
    """True when every value is finite on every rank: all ranks then take the same branch."""
    finite = all(bool(torch.isfinite(v.detach()).all()) for v in values)
    flag = torch.tensor([1.0 if finite else 0.0])
    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend()
        if backend == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0.5)


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over all ranks (collective: every rank calls it with the same keys), so a
    logged loss is the global batch's, not rank 0's share."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, tensor.tolist())}


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
