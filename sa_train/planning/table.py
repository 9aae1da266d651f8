"""The plan as aligned text tables (what `sa-train plan` prints without --json)."""

from __future__ import annotations

from typing import Optional, Sequence

from sa_train.planning import estimate
from sa_train.planning.report import GIB, Plan

FLOP_UNITS = (("ZFLOP", 1e21), ("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6))


def table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Rows of cells as aligned lines; the columns in ``right`` are right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(len(r) for r in rows))]
    lines = []
    for row in rows:
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def human_count(n: Optional[int]) -> str:
    if n is None:
        return "not counted"
    return f"{n:,} ({n / 1e6:.1f}M)" if n >= 1e5 else f"{n:,}"


def human_flops(flops: float) -> str:
    if flops == 0:
        return "0"
    for unit, scale in FLOP_UNITS:
        if flops >= scale:
            return f"{flops / scale:,.2f} {unit}"
    return f"{flops:,.0f} FLOP"


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:,.2f}"


def human_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h = {seconds / 86400:,.2f} days"


def _parameters(plan: Plan) -> list[str]:
    rows = [("component", "parameters", "role", "note")]
    rows += [(c.name, human_count(c.parameters), c.role, c.note) for c in plan.components]
    rows.append(("trained total", human_count(plan.trained_parameters), "", ""))
    return ["Parameters (counted on the meta device)", *table(rows, right=(1,))]


def _compute(plan: Plan) -> list[str]:
    c = plan.compute
    per_step = plan.micro_steps_per_step
    head = (
        "FLOPs",
        "per micro-batch",
        f"per step (x{plan.grad_accum_steps} accum x{plan.workers} workers)",
        f"run ({plan.steps:,} steps)",
    )
    rows = [head]
    for name, flops in (
        ("trained model forward", c.train_forward_flops),
        ("trained model backward", c.train_backward_flops),
        ("autoencoder encode (frozen)", c.encode_flops),
        ("total", c.total_flops),
    ):
        run_flops = flops * per_step * plan.steps
        rows.append((name, human_flops(flops), human_flops(flops * per_step), human_flops(run_flops)))
    return ["FLOPs (counted with torch's FlopCounterMode on meta tensors)", *table(rows, right=(1, 2, 3))]


def _memory(plan: Plan) -> list[str]:
    p, g, o = estimate.bytes_per_parameter(plan.precision)
    rows = [("ZeRO", "parameters", "gradients", "optimizer", "EMA", "activations", "frozen", "total", "")]
    for m in plan.memory:
        mark = "<- configured" if m.stage == plan.zero_stage else ""
        if m.offloaded:
            mark = f"{mark} ({m.offloaded} on CPU)".strip()
        rows.append((
            str(m.stage), gib(m.parameters_bytes), gib(m.gradients_bytes), gib(m.optimizer_bytes), gib(m.ema_bytes),
            gib(m.activations_bytes), gib(m.frozen_bytes), gib(m.total_bytes), mark,
        ))
    return [
        f"Memory per GPU, GiB ({plan.precision} Adam: {p} + {g} + {o} bytes per trained parameter, "
        f"sharded over {plan.workers} GPUs)",
        *table(rows, right=(1, 2, 3, 4, 5, 6, 7)),
        f"activations: {plan.compute.activation_method}, micro-batch {plan.micro_batch}",
    ]


def _checkpoint(plan: Plan) -> list[str]:
    c = plan.checkpoint
    rows = [
        ("model.safetensors (fp32 weights)", gib(c.model_bytes)),
        ("ema.safetensors (fp32 EMA)", gib(c.ema_bytes)),
        ("DeepSpeed optimizer shards (fp32 master + Adam)", gib(c.optimizer_bytes)),
        (f"DeepSpeed module weights ({plan.precision})", gib(c.module_bytes)),
        ("one checkpoint", gib(c.total_bytes)),
        (f"storage for the {plan.keep_checkpoints} kept (training.keep_checkpoints)",
         gib(c.total_bytes * plan.keep_checkpoints)),
    ]
    return [
        f"Checkpoint size, GiB (ZeRO stage {plan.zero_stage}; gathered and written by rank 0 alone, "
        "shards by every rank)",
        *table(rows, right=(1,)),
        f"model.safetensors repeats the fp32 master of the optimizer shards ({gib(c.duplicate_bytes)} GiB): "
        "kept so export needs no DeepSpeed",
    ]


def _time(plan: Plan) -> list[str]:
    t = plan.time
    rows = [
        ("per step", human_duration(t.seconds_per_step)),
        (f"{t.steps:,} steps", human_duration(t.total_seconds)),
        ("GPU hours", f"{t.gpu_hours:,.0f}"),
        ("cost", f"{t.cost:,.0f} USD at {t.price_per_gpu_hour:g} USD per GPU hour"),
    ]
    head = (
        f"Time ({t.gpus} x {t.gpu}: {t.peak_tflops:g} TFLOP/s bf16 peak x {t.utilization:g} utilisation "
        f"= {t.achieved_flops_per_second / 1e15:,.1f} PFLOP/s)"
    )
    return [head, *table(rows)]


def format_plan(plan: Plan) -> str:
    """The plan as text: a header, then parameters, FLOPs, memory and time tables, then notes."""
    c = plan.compute
    shapes = f"input {tuple(c.input_shape)}" + (f", context {tuple(c.context_shape)}" if c.context_shape else "")
    header = [
        f"sa-train plan {plan.config}".rstrip(),
        f"stage {plan.stage} on {plan.input_kind}, precision {plan.precision}, ZeRO stage {plan.zero_stage}",
        f"batch {plan.global_batch} = {plan.workers} workers x {plan.grad_accum_steps} accumulation x "
        f"micro-batch {plan.micro_batch}; {shapes}",
    ]
    sections = [header, _parameters(plan), _compute(plan), _memory(plan), _checkpoint(plan), _time(plan)]
    if plan.notes:
        sections.append(["Notes", *(f"- {note}" for note in plan.notes)])
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"
