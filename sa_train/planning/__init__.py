"""`sa-train plan`: parameters, FLOPs, memory per GPU, time and cost of a configured training run,
counted on the meta device (no memory, no download, seconds even for the paper's 907M U-Net).

    parameters  component counts and their role in the stage (trained / frozen / unused)
    compute     FLOPs and activation bytes of one micro-step (FlopCounterMode, saved-tensor hooks)
    estimate    ZeRO memory per GPU, time and cost (plain formulas)
    report      the Plan and make_plan(); table formats it as text
"""

from sa_train.planning.estimate import DEFAULT_GPU, DEFAULT_PRICE_PER_GPU_HOUR, DEFAULT_UTILIZATION, GPU_PEAK_TFLOPS
from sa_train.planning.report import Plan, make_plan
from sa_train.planning.table import format_plan

__all__ = [
    "DEFAULT_GPU",
    "DEFAULT_PRICE_PER_GPU_HOUR",
    "DEFAULT_UTILIZATION",
    "GPU_PEAK_TFLOPS",
    "Plan",
    "format_plan",
    "make_plan",
]
