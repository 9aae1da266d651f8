"""Config of the diffusion objective (``model.diffusion``) and of sampling (``model.sampling``),
owned by this package."""

from __future__ import annotations

from dataclasses import dataclass

from sa_train.config.fields import ConfigError, param

SAMPLERS = ("ddim", "dpmpp-2m", "dpmpp-2m-sde", "dpmpp-3m-sde")
SIGMA_SCHEDULES = ("polyexponential", "karras")


@dataclass
class DiffusionConfig:
    """The v-objective with the cosine schedule, and classifier-free-guidance dropout."""

    objective: str = param("v", "training target: 'v' (alpha eps - sigma x0), as the paper", choices=["v"])
    schedule: str = param("cosine", "noise schedule: alpha = cos(pi t / 2), sigma = sin(pi t / 2)", choices=["cosine"])
    time_sampling: str = param(
        "sobol", "how training times t are drawn: 'uniform' or a scrambled 'sobol' sequence", choices=["uniform", "sobol"]
    )
    cfg_dropout: float = param(0.1, "probability of replacing an example's whole conditioning by the null sequence", min=0, max=1)
    null_embedding: str = param(
        "learned", "the null conditioning for CFG: a 'learned' sequence or 'zeros'", choices=["learned", "zeros"]
    )
    null_mask: str = param(
        "all",
        "which tokens of the CFG null sequence are attended: 'all' (sa_train: the null is a whole sequence of its "
        "own, independent of the prompt) or 'prompt' (stable-audio-tools: the null keeps the prompt's padding mask; "
        "use it with model.unet.context_mask=zero_kv for checkpoints imported from stable-audio-tools)",
        choices=["all", "prompt"],
    )
    mask_padding_in_loss: bool = param(
        False,
        "exclude padded latent frames (the silence after a short file) from the loss. False, the default "
        "and stable-audio-tools' behaviour, trains the model to produce that silence after seconds_total, "
        "which is how the timing conditioning controls the length of the audio",
    )
    padding_mask_dropout: float = param(
        0.0,
        "with mask_padding_in_loss: probability, drawn per example, of including its padded frames anyway, "
        "so that silence is still learned (stable-audio-tools' mask_padding_dropout, drawn per batch there)",
        min=0,
        max=1,
    )


def check_diffusion(cfg: DiffusionConfig, key: str = "model.diffusion") -> None:
    """Cross-field rules of this section; raises ConfigError naming the key and the fix."""
    if cfg.padding_mask_dropout > 0 and not cfg.mask_padding_in_loss:
        raise ConfigError(
            f"{key}.padding_mask_dropout={cfg.padding_mask_dropout} has no effect: padded frames are already "
            f"in the loss because {key}.mask_padding_in_loss=false; set padding_mask_dropout=0 or "
            "mask_padding_in_loss=true"
        )


@dataclass
class SamplingConfig:
    """How audio is generated: sampler, steps, sigma schedule and guidance."""

    sampler: str = param("dpmpp-3m-sde", "sampler", choices=SAMPLERS)
    steps: int = param(50, "denoising steps (paper: 100)", min=1)
    cfg_scale: float = param(6.0, "classifier-free guidance scale (1 = no guidance; paper: 6)", min=0)
    schedule: str = param("polyexponential", "sigma schedule", choices=SIGMA_SCHEDULES)
    sigma_min: float = param(0.03, "smallest noise level of the schedule", min=0, min_exclusive=True)
    sigma_max: float = param(500.0, "largest noise level of the schedule", min=0, min_exclusive=True)
    rho: float = param(1.0, "schedule shape: polyexponential exponent or Karras rho", min=0, min_exclusive=True)
    seed: int = param(0, "seed of the initial noise and of the SDE samplers' noise")
