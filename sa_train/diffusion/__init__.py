"""Diffusion: the v-objective, schedules, denoiser wrappers, samplers and the weight EMA.

Modules (imported directly; this package stays light because sa_train.config imports its config):
    schedule   cosine schedule, t <-> sigma, training-time samplers, sigma schedules for sampling
    objective  v_objective_loss (per-example)
    denoiser   VDenoiser (v-model -> sigma-space denoiser), CFGDenoiser (batched guidance)
    samplers   ddim, dpmpp-2m, dpmpp-2m-sde, dpmpp-3m-sde, SAMPLERS, generate
    ema        EMA of model weights
"""
