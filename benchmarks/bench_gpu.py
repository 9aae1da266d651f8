"""GPU benchmark: the paper's U-Net at the paper's shape, training throughput and generation time.

Needs a CUDA device; elsewhere it prints "no GPU: ..." and exits 0. In one run, on one GPU:

1. Training throughput: forward + backward of the stable_audio_1_0 U-Net (907M parameters) on
   latents of 64 channels x 4096 frames (95.1 s), micro-batch 4, 79 context tokens of width 768,
   under bf16 autocast, once with xformers attention (when installed) and once with torch sdpa.
   FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over the same model and
   shapes on the meta device with the math attention (2 FLOPs per multiply-add; the model's FLOPs,
   the same for every backend: FlopCounterMode does not see inside xformers' kernels, and kernels
   that recompute attention in backward do more work than counted), so achieved TFLOP/s =
   counted FLOPs / measured seconds, and utilisation = that / the device's dense bf16 peak
   (A100 312, H100 SXM 989, H100 PCIe 756, H200 989 TFLOP/s). Peak memory is
   ``torch.cuda.max_memory_allocated`` over the timed steps (fp32 weights and gradients included).
2. Generation: 95.1 s of stereo audio from noise: 100 DPM-Solver++ (3M SDE, the paper's sampler)
   steps, each one U-Net forward at batch 2 (classifier-free guidance, scale 6), then the
   stable_audio_1_0 VAE's decoder (chunked as ``model.autoencoder.decode_chunk_frames``), under
   bf16 autocast; random weights (the time does not depend on them); the text encoder's single
   forward is not included.

Baselines: the device's bf16 peak (utilisation) and the paper's generation time (8 s on an A100).
Targets (issue 7): utilisation >= 40%; generation < 8 s on an H100. Prints tables and appends a
dated line with the device name to benchmarks/RESULTS.md.

    PYTHONPATH=. python -m benchmarks.bench_gpu            # on a GPU machine, a few minutes
    PYTHONPATH=. python -m benchmarks.bench_gpu --cpu-smoke  # checks the script on the CPU, tiny model
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from sa_train.config import load_config  # noqa: E402
from sa_train.diffusion.denoiser import CFGDenoiser, VDenoiser  # noqa: E402
from sa_train.diffusion.samplers import generate  # noqa: E402
from sa_train.models.autoencoder.vae import AutoencoderVAE  # noqa: E402
from sa_train.models.conditioners.timing import TimingEmbedding  # noqa: E402
from sa_train.models.unet.attention import xformers_available  # noqa: E402
from sa_train.models.unet.unet import UNet1D  # noqa: E402
from sa_train.planning import GPU_PEAK_TFLOPS  # noqa: E402

from benchmarks.results import record  # noqa: E402
logger = logging.getLogger("bench_gpu")
RESULTS = os.path.join(REPO, "benchmarks", "RESULTS.md")
PAPER_CONFIG = os.path.join(REPO, "configs", "experiments", "stable_audio_1_0_diffusion.yaml")
SMOKE_CONFIG = os.path.join(REPO, "configs", "experiments", "tiny_diffusion.yaml")
TARGET_UTILIZATION = 0.40
TARGET_GENERATION_S = 8.0
PAPER_GENERATION_S = 8.0  # the paper, on an A100
REAL_TEXT_TOKENS = 24  # a short prompt: the rest of the text tokens are masked padding
H100_PCIE_PEAK_TFLOPS = 756.0  # dense bf16, data sheet; the SXM part is GPU_PEAK_TFLOPS["h100"]


def peak_tflops(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a device from its CUDA name, or None when it is not in the table."""
    name = device_name.lower()
    if "h100" in name and "pcie" in name:
        return H100_PCIE_PEAK_TFLOPS
    for key, value in GPU_PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


@dataclass
class Shapes:
    batch: int
    channels: int
    frames: int
    tokens: int
    context_width: int
    global_width: Optional[int]


def inputs(shapes: Shapes, batch: int, device: torch.device) -> dict[str, Optional[torch.Tensor]]:
    """Random U-Net inputs: x (batch, channels, frames), t (batch,), context (batch, tokens, width), mask."""
    g = torch.Generator(device=device).manual_seed(0)
    mask = torch.zeros(batch, shapes.tokens, dtype=torch.bool, device=device)
    mask[:, :REAL_TEXT_TOKENS] = True
    mask[:, -2:] = True  # the two timing tokens
    glob = None
    if shapes.global_width:
        glob = torch.randn(batch, shapes.global_width, generator=g, device=device)
    return {
        "x": torch.randn(batch, shapes.channels, shapes.frames, generator=g, device=device),
        "t": torch.rand(batch, generator=g, device=device),
        "context": torch.randn(batch, shapes.tokens, shapes.context_width, generator=g, device=device),
        "context_mask": mask,
        "global_cond": glob,
    }


def count_training_flops(unet_cfg, shapes: Shapes) -> tuple[int, int]:
    """(forward, backward) FLOPs of one micro-batch, counted on the meta device (no memory)."""
    meta = torch.device("meta")
    with meta:
        unet = UNet1D(unet_cfg, global_cond_width=shapes.global_width)
    unet.set_attention_backend("math")  # on meta; its FLOPs equal those of the fused kernels
    args = {k: (torch.empty_like(v, device=meta) if v is not None else None) for k, v in
            inputs(shapes, shapes.batch, torch.device("cpu")).items()}
    forward, backward = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with forward:
        out = unet(args["x"], args["t"], args["context"], args["context_mask"], args["global_cond"])
    with backward:
        out.float().square().mean().backward()
    return forward.get_total_flops(), backward.get_total_flops()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@dataclass
class TrainResult:
    backend: str
    seconds: float  # per forward + backward
    peak_bytes: float  # nan on the CPU
    error: str = ""


def time_training(unet: UNet1D, backend: str, shapes: Shapes, device: torch.device, use_autocast: bool,
                  warmup: int, iterations: int) -> TrainResult:
    """Mean seconds of forward + backward over ``iterations`` steps after ``warmup`` (gradients accumulate)."""
    unet.set_attention_backend(backend)
    args = inputs(shapes, shapes.batch, device)

    def step() -> None:
        with autocast(device, use_autocast):
            out = unet(args["x"], args["t"], args["context"], args["context_mask"], args["global_cond"])
        out.float().square().mean().backward()

    try:
        for _ in range(warmup):
            step()
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        synchronize(device)
        seconds = (time.perf_counter() - start) / iterations
    except torch.cuda.OutOfMemoryError as err:
        unet.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return TrainResult(backend, float("nan"), float("nan"), f"out of memory: {str(err).splitlines()[0]}")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")
    unet.zero_grad(set_to_none=True)
    return TrainResult(backend, seconds, peak)


@dataclass
class GenerationResult:
    sampling_s: float
    decode_s: float
    audio_seconds: float
    peak_bytes: float

    @property
    def total_s(self) -> float:
        return self.sampling_s + self.decode_s


@torch.no_grad()
def time_generation(cfg, unet: UNet1D, vae: AutoencoderVAE, shapes: Shapes, device: torch.device,
                    use_autocast: bool, steps: int) -> GenerationResult:
    """Sample one window with CFG (batch 2 per U-Net call) and decode it, timed apart."""
    unet.set_attention_backend(cfg.model.unet.attention_backend)
    cond = inputs(shapes, 1, device)
    uncond = {"context": torch.zeros_like(cond["context"]),  # stands in for the learned null sequence
              "context_mask": torch.ones_like(cond["context_mask"]),
              "global_cond": torch.zeros_like(cond["global_cond"]) if cond["global_cond"] is not None else None}
    keys = ("context", "context_mask", "global_cond")

    def v_model(x, t, context, context_mask, global_cond):
        with autocast(device, use_autocast):
            return unet(x, t, context, context_mask, global_cond)

    guided = CFGDenoiser(VDenoiser(v_model), {k: cond[k] for k in keys}, uncond, cfg.model.sampling.cfg_scale)
    sampling = dataclasses.replace(cfg.model.sampling, steps=steps)
    chunk = cfg.model.autoencoder.decode_chunk_frames

    def run(sampling_cfg) -> tuple[float, float]:
        generator = torch.Generator(device=device).manual_seed(sampling_cfg.seed)
        synchronize(device)
        start = time.perf_counter()
        latents = generate(guided, (1, shapes.channels, shapes.frames), sampling_cfg, generator=generator)
        synchronize(device)
        middle = time.perf_counter()
        with autocast(device, use_autocast):
            audio = vae.decode_chunked(latents, chunk) if chunk else vae.decode(latents)
        synchronize(device)
        assert audio.shape[-1] == shapes.frames * vae.downsampling
        return middle - start, time.perf_counter() - middle

    run(dataclasses.replace(sampling, steps=2))  # warm-up: kernel selection, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampling_s, decode_s = run(sampling)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else float("nan")
    audio_seconds = shapes.frames * vae.downsampling / cfg.data.sample_rate
    return GenerationResult(sampling_s, decode_s, audio_seconds, peak)


def no_gpu_message() -> str:
    return (f"no GPU: torch {torch.__version__} sees no CUDA device on this machine "
            f"(torch.cuda.is_available() is False), so the GPU benchmark did not run. Run "
            "`python -m benchmarks.bench_gpu` on a machine with an NVIDIA GPU (an H100 for the targets); "
            "`--cpu-smoke` checks the script here with the tiny model.")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="experiment config (default: stable_audio_1_0_diffusion)")
    parser.add_argument("--batch", type=int, default=4, help="training micro-batch (default 4, the paper's)")
    parser.add_argument("--frames", type=int, default=None, help="latent frames (default: the config's window, 4096)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps (default 3)")
    parser.add_argument("--iterations", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--generation-steps", type=int, default=100, help="sampler steps (default 100)")
    parser.add_argument("--no-autocast", action="store_true", help="run in fp32 instead of bf16 autocast")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN time its convolution algorithms first (sa_train does not set it)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="no GPU needed: run every step on the CPU with the tiny model and small shapes "
                             "(checks the script; figures meaningless; nothing appended)")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.cpu_smoke:
        device, config_path = torch.device("cpu"), args.config or SMOKE_CONFIG
        args.frames, args.batch, args.warmup, args.iterations = args.frames or 64, 1, 1, 1
        args.generation_steps, args.no_append = min(args.generation_steps, 3), True
    elif not torch.cuda.is_available():
        print(no_gpu_message())
        return 0
    else:
        device, config_path = torch.device("cuda"), args.config or PAPER_CONFIG
    use_autocast = not args.no_autocast
    precision = ("bf16 autocast" if use_autocast else "fp32") + (", cudnn.benchmark" if args.cudnn_benchmark else "")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    peak = peak_tflops(device_name) if device.type == "cuda" else None

    cfg = load_config(config_path)
    model = cfg.model
    if model.autoencoder.kind != "vae":
        raise ValueError(f"{config_path}: model.autoencoder.kind must be 'vae' for this benchmark (latent diffusion)")
    with torch.device("meta"):
        timing = TimingEmbedding(model.conditioning.timing, model.unet.context_width)
    frames = args.frames or cfg.data.window_samples // model.autoencoder.downsampling
    shapes = Shapes(args.batch, model.unet.in_channels, frames,
                    model.conditioning.text_encoder.max_length + timing.num_tokens, model.unet.context_width,
                    timing.global_width)
    forward_flops, backward_flops = count_training_flops(model.unet, shapes)
    flops = forward_flops + backward_flops

    torch.manual_seed(0)
    unet = UNet1D(model.unet, global_cond_width=shapes.global_width).to(device)
    params = sum(p.numel() for p in unet.parameters())
    print(f"device: {device_name}; bf16 peak {peak or 'unknown'} TFLOP/s; torch {torch.__version__}; "
          f"U-Net {params / 1e6:.1f}M parameters; x ({shapes.batch}, {shapes.channels}, {shapes.frames}), "
          f"context ({shapes.batch}, {shapes.tokens}, {shapes.context_width}); "
          f"{precision}; counted {forward_flops / 1e12:.2f} + "
          f"{backward_flops / 1e12:.2f} TFLOP per forward + backward")

    backends = (["xformers"] if device.type == "cuda" and xformers_available() else []) + ["sdpa"]
    if "xformers" not in backends and device.type == "cuda":
        print("xformers is not installed (pip install xformers matching this torch): measuring sdpa only")
    train = [time_training(unet, b, shapes, device, use_autocast, args.warmup, args.iterations) for b in backends]
    print(f"\n{'attention':10s} {'ms/step':>9s} {'TFLOP/s':>9s} {'of peak':>8s} {'peak GB':>8s} {'vs sdpa':>8s}")
    sdpa = next(r for r in train if r.backend == "sdpa")
    notes = []
    for r in train:
        if r.error:
            print(f"{r.backend:10s} {r.error}")
            notes.append(f"{r.backend} {r.error}")
            continue
        achieved = flops / r.seconds / 1e12
        utilization = achieved / peak if peak else float("nan")
        print(f"{r.backend:10s} {r.seconds * 1e3:9.1f} {achieved:9.1f} {utilization:7.1%} {r.peak_bytes / 1e9:8.1f} "
              f"{sdpa.seconds / r.seconds:7.2f}x")
        verdict = "met" if utilization >= TARGET_UTILIZATION else "missed"
        notes.append(f"{r.backend} {r.seconds * 1e3:.0f} ms/step, {achieved:.0f} TFLOP/s = {utilization:.1%} of peak "
                     f"(target >= {TARGET_UTILIZATION:.0%} {verdict}), peak {r.peak_bytes / 1e9:.1f} GB")
    del unet
    if device.type == "cuda":
        torch.cuda.empty_cache()

    torch.manual_seed(0)
    unet = UNet1D(model.unet, global_cond_width=shapes.global_width).to(device).eval()
    vae = AutoencoderVAE(model.autoencoder).to(device).eval()
    gen = time_generation(cfg, unet, vae, shapes, device, use_autocast, args.generation_steps)
    gen_verdict = "met" if gen.total_s < TARGET_GENERATION_S else "missed"
    print(f"\ngeneration of {gen.audio_seconds:.1f} s stereo: {args.generation_steps} "
          f"{cfg.model.sampling.sampler} steps "
          f"with CFG {cfg.model.sampling.cfg_scale} (batch 2 per step) {gen.sampling_s:.2f} s + VAE decode "
          f"{gen.decode_s:.2f} s = {gen.total_s:.2f} s ({gen.total_s / PAPER_GENERATION_S:.2f}x the paper's "
          f"{PAPER_GENERATION_S:.0f} s on an A100; target < {TARGET_GENERATION_S:.0f} s on an H100: {gen_verdict}); "
          f"peak {gen.peak_bytes / 1e9:.1f} GB")
    notes.append(f"generation {gen.audio_seconds:.1f} s audio in {gen.total_s:.2f} s (sampling {gen.sampling_s:.2f}, "
                 f"decode {gen.decode_s:.2f}; target < {TARGET_GENERATION_S:.0f} s {gen_verdict})")

    entry = (f"- {datetime.date.today().isoformat()} bench_gpu ({device_name}, torch {torch.__version__}, "
             f"U-Net {params / 1e6:.0f}M, {shapes.batch} x {shapes.channels} x {shapes.frames}, "
             f"{precision}, {flops / 1e12:.1f} TFLOP/step): " + "; ".join(notes))
    record(entry, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
