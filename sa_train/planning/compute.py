"""FLOPs and activation memory of one training micro-step, counted on the meta device.

The real modules run forward and backward on meta tensors (shapes and dtypes only, no data, no
memory), under two instruments:

- ``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of every matmul, convolution and
  attention kernel (2 FLOPs per multiply-add; elementwise ops, norms and FFTs are not counted:
  they are memory-bound and small next to the matmuls).
- ``torch.autograd.graph.saved_tensors_hooks`` sees every tensor autograd keeps for backward;
  their bytes (each storage once, parameters excluded) are the activation memory at the end of
  the forward pass, the peak of a training step.

Attention: on meta, torch's sdpa takes its math path, which would keep the full attention matrix.
A GPU run uses a memory-efficient kernel (xformers, or sdpa's flash/efficient kernels), so unless
the config forces ``attention_backend: math``, the U-Net's attention is routed to torch's
memory-efficient attention op while counting: same FLOPs, the GPU's saved tensors.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sa_train.config.schema import ExperimentConfig

META = torch.device("meta")


@dataclass
class StepCompute:
    """One micro-step on one worker: FLOPs and activation bytes.

    train_forward_flops / train_backward_flops: the trained model (backward includes the recompute
    of checkpointed blocks). encode_flops: the frozen autoencoder's encoding of the audio (0 when
    training reads latents). activation_bytes: saved tensors at the end of the forward pass.
    """

    input_shape: tuple[int, ...]
    context_shape: Optional[tuple[int, ...]]
    train_forward_flops: int
    train_backward_flops: int
    encode_flops: int
    activation_bytes: int
    activation_method: str
    notes: list[str] = field(default_factory=list)

    @property
    def train_flops(self) -> int:
        return self.train_forward_flops + self.train_backward_flops

    @property
    def total_flops(self) -> int:
        return self.train_flops + self.encode_flops


class SavedTensorMeter:
    """Sums the bytes of tensors saved for backward, each storage once, parameters excluded.

    With :meth:`watch_blocks`, bytes saved inside each watched block (and each block's input) are
    also recorded, which gives the gradient-checkpointing estimate.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {id(t) for t in exclude}
        self._kept: dict[int, torch.Tensor] = {}  # keeps ids unique while measuring
        self._inputs_kept: dict[int, torch.Tensor] = {}
        self.total = 0
        self.by_block: dict[int, int] = {}
        self.block_inputs: dict[int, int] = {}
        self._current: Optional[int] = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        key = id(base)
        if key not in self._exclude and key not in self._kept:
            self._kept[key] = base
            nbytes = base.untyped_storage().nbytes()
            self.total += nbytes
            if self._current is not None:
                self.by_block[self._current] = self.by_block.get(self._current, 0) + nbytes
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def watch_blocks(self, blocks: Iterable[nn.Module]) -> list:
        """Attribute saved bytes to ``blocks`` (not nested); returns the hook handles."""

        def enter(module: nn.Module, args: tuple) -> None:
            self._current = id(module)
            x = args[0]
            self._inputs_kept.setdefault(id(x), x)  # apart from _kept: x may still be saved by an op
            self.block_inputs[id(x)] = x.untyped_storage().nbytes()

        def leave(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self._current = None

        handles = []
        for block in blocks:
            handles.append(block.register_forward_pre_hook(enter))
            handles.append(block.register_forward_hook(leave))
        return handles

    def checkpointed_estimate(self) -> int:
        """Activation bytes if every watched block recomputed its activations in backward: what is
        saved outside the blocks, plus each block's input (kept for the recompute), plus the
        largest block's own saved tensors (alive during its recompute)."""
        inside = sum(self.by_block.values())
        return self.total - inside + sum(self.block_inputs.values()) + max(self.by_block.values(), default=0)


def _efficient_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """The memory-efficient attention op, as a GPU would run it (q: (B, H, Lq, D), mask: (B, Lk))."""
    bias = None
    if mask is not None:
        batch, keys = mask.shape
        bias = torch.zeros(batch, 1, 1, keys, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~mask[:, None, None, :], float("-inf")).expand(batch, q.shape[1], q.shape[2], keys)
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True)[0]


@contextlib.contextmanager
def _memory_efficient_attention(unet: nn.Module, configured_backend: str) -> Iterator[None]:
    """Run the U-Net's attention as a GPU would: memory-efficient unless the config forces math."""
    if configured_backend == "math":
        yield
        return
    from sa_train.models.unet import attention as attention_module

    unet.set_attention_backend("sdpa")  # no xformers on meta; the sdpa slot is swapped below
    original = attention_module._BACKENDS["sdpa"]
    attention_module._BACKENDS["sdpa"] = _efficient_attention
    try:
        yield
    finally:
        attention_module._BACKENDS["sdpa"] = original


def _forward_backward(run_forward, meter: Optional[SavedTensorMeter] = None) -> tuple[int, int]:
    """FLOPs of ``run_forward()`` (returns a tensor) and of the backward of its mean square."""
    forward_counter, backward_counter = FlopCounterMode(display=False), FlopCounterMode(display=False)
    with forward_counter, (meter.hooks() if meter else contextlib.nullcontext()):
        out = run_forward()
    with backward_counter:
        out.float().square().mean().backward()
    return forward_counter.get_total_flops(), backward_counter.get_total_flops()


def training_dtype(precision: str) -> torch.dtype:
    """The dtype DeepSpeed trains the module in: bf16 / fp16 engines cast it, fp32 keeps it."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def encode_flops(cfg: ExperimentConfig, micro_batch: int) -> int:
    """FLOPs of the frozen autoencoder encoding one micro-batch of training windows (no grad)."""
    from sa_train.models.autoencoder.vae import AutoencoderVAE

    ae = cfg.model.autoencoder
    with torch.device(META):
        vae = AutoencoderVAE(ae)
    audio = torch.zeros(micro_batch, ae.audio_channels, cfg.data.window_samples, device=META)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vae.encode(audio)
    return counter.get_total_flops()


def diffusion_step(cfg: ExperimentConfig, micro_batch: int, precision: str, context_trainable: bool) -> StepCompute:
    """The U-Net's forward and backward (v-objective) on one micro-batch, plus the encoding of its
    audio by the frozen autoencoder when training does not read pre-encoded latents."""
    from sa_train.models.conditioners.timing import TimingEmbedding
    from sa_train.models.unet.blocks import ResnetBlock1d, TransformerBlock1d
    from sa_train.models.unet.unet import UNet1D

    model, dtype = cfg.model, training_dtype(precision)
    frames = cfg.data.window_samples // model.autoencoder.downsampling
    width = model.unet.context_width
    timing_cfg = model.conditioning.timing
    with torch.device(META):
        timing = TimingEmbedding(timing_cfg, width)
        unet = UNet1D(model.unet, global_cond_width=timing.global_width).to(dtype)
    tokens = model.conditioning.text_encoder.max_length + timing.num_tokens

    x = torch.zeros(micro_batch, model.unet.in_channels, frames, device=META, dtype=dtype)
    t = torch.zeros(micro_batch, device=META)
    # The context and global vector carry gradients back to the trainable conditioning parts.
    context = torch.zeros(micro_batch, tokens, width, device=META, dtype=dtype, requires_grad=context_trainable)
    mask = torch.ones(micro_batch, tokens, device=META, dtype=torch.bool)
    glob = None
    if timing.global_width:
        glob = torch.zeros(micro_batch, timing.global_width, device=META, dtype=dtype, requires_grad=True)

    def forward() -> torch.Tensor:
        return unet(x, t, context, mask, glob)

    checkpointing = model.unet.gradient_checkpointing
    meter = SavedTensorMeter(exclude=unet.parameters())
    notes = []
    with _memory_efficient_attention(unet, model.unet.attention_backend):
        # Activations are measured without checkpointing, block by block (see checkpointed_estimate).
        unet.set_gradient_checkpointing(False)
        blocks = [m for m in unet.modules() if isinstance(m, (ResnetBlock1d, TransformerBlock1d))]
        handles = meter.watch_blocks(blocks)
        try:
            fwd, bwd = _forward_backward(forward, meter)
        finally:
            for handle in handles:
                handle.remove()
        if checkpointing:  # FLOPs again with the recompute in backward
            unet.set_gradient_checkpointing(True)
            fwd, bwd = _forward_backward(forward)

    attention = "math (full attention matrix)" if model.unet.attention_backend == "math" else "memory-efficient"
    if checkpointing:
        activations = meter.checkpointed_estimate()
        method = (
            f"tensors saved for backward, measured on meta ({attention} attention), with gradient checkpointing: "
            "saved outside the blocks + every block's input + the largest block's own"
        )
    else:
        activations = meter.total
        method = f"tensors saved for backward, measured on meta ({attention} attention)"

    encode = 0
    if model.autoencoder.kind == "vae" and cfg.data.latents is None:
        encode = encode_flops(cfg, micro_batch)
        notes.append("training from audio: the frozen autoencoder encodes every micro-batch (encode FLOPs included)")
    elif model.autoencoder.kind == "vae":
        notes.append("training from pre-encoded latents (data.latents): no autoencoder FLOPs per step")
    notes.append("the frozen text encoder's forward is not counted (small next to the U-Net)")
    return StepCompute(
        input_shape=tuple(x.shape),
        context_shape=tuple(context.shape),
        train_forward_flops=fwd,
        train_backward_flops=bwd,
        encode_flops=encode,
        activation_bytes=activations,
        activation_method=method,
        notes=notes,
    )


def autoencoder_step(cfg: ExperimentConfig, micro_batch: int, precision: str) -> StepCompute:
    """One GAN micro-step of the autoencoder stage, as the training task runs it once the
    adversarial losses are on: VAE forward, discriminator step on detached reconstructions,
    generator step through the frozen discriminator."""
    from sa_train.models.autoencoder.training_losses import AutoencoderLosses, build_discriminator
    from sa_train.models.autoencoder.vae import AutoencoderVAE

    ae, dtype = cfg.model.autoencoder, training_dtype(precision)
    with torch.device(META):
        vae = AutoencoderVAE(ae).to(dtype)
        disc = build_discriminator(ae).to(dtype)
        losses = AutoencoderLosses(ae.losses, sample_rate=cfg.data.sample_rate)
    real = torch.zeros(micro_batch, ae.audio_channels, cfg.data.window_samples, device=META, dtype=dtype)
    params = [*vae.parameters(), *disc.parameters()]
    meters = [SavedTensorMeter(exclude=params) for _ in range(3)]
    forward_flops = backward_flops = 0

    def counted(fn, meter: Optional[SavedTensorMeter] = None):
        # A FlopCounterMode restarts from zero each time it is entered: one counter per phase.
        counter = FlopCounterMode(display=False)
        with counter, (meter.hooks() if meter else contextlib.nullcontext()):
            result = fn()
        return result, counter.get_total_flops()

    out, flops = counted(lambda: vae(real), meters[0])
    forward_flops += flops
    d_loss, flops = counted(
        lambda: losses.discriminator_losses(real, out.reconstruction, disc)["total"].mean(), meters[1]
    )
    forward_flops += flops
    backward_flops += counted(d_loss.backward)[1]
    disc.requires_grad_(False)
    g_loss, flops = counted(
        lambda: losses.generator_losses(real, out.reconstruction, out.kl, disc, adversarial=True)["total"].mean(),
        meters[2],
    )
    forward_flops += flops
    backward_flops += counted(g_loss.backward)[1]

    # The discriminator's graph is freed by its backward before the generator's loss is built.
    activations = meters[0].total + max(meters[1].total, meters[2].total)
    return StepCompute(
        input_shape=tuple(real.shape),
        context_shape=None,
        train_forward_flops=forward_flops,
        train_backward_flops=backward_flops,
        encode_flops=0,
        activation_bytes=activations,
        activation_method=(
            "tensors saved for backward, measured on meta: the VAE's forward + the larger of the "
            "discriminator's and the generator loss's graphs"
        ),
        notes=["adversarial losses assumed on (after training.adversarial_start_step); STFT FFTs are not counted"],
    )
