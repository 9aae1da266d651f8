"""Behaviour of the autoencoder's training losses and the multi-scale STFT discriminator."""

from __future__ import annotations

import math

import pytest
import torch

from sa_train.models.autoencoder.config import AutoencoderConfig, AutoencoderLossConfig
from sa_train.models.autoencoder.discriminator import MultiScaleSTFTDiscriminator
from sa_train.models.autoencoder.losses import (
    MultiResolutionSTFTLoss,
    StereoSTFTLoss,
    a_weighting,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from sa_train.models.autoencoder.training_losses import AutoencoderLosses, build_discriminator
from sa_train.models.autoencoder.vae import AutoencoderVAE

torch.set_num_threads(1)

FFT_SIZES = [256, 64, 32]


def tone(samples: int, freq: float = 440.0, sample_rate: int = 44100, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(samples) / sample_rate
    return torch.sin(2 * math.pi * freq * t + phase)


def stereo_tone(samples: int = 4096) -> torch.Tensor:
    """(1, 2, samples): a 440 Hz tone, quieter and phase-shifted on the right."""
    return torch.stack([0.5 * tone(samples), 0.3 * tone(samples, phase=0.5)])[None]


@pytest.mark.parametrize("weighting", [False, True])
def test_stft_loss_is_zero_for_identical_inputs_and_positive_otherwise(weighting):
    torch.manual_seed(0)
    loss = MultiResolutionSTFTLoss(FFT_SIZES, perceptual_weighting=weighting)
    audio = torch.randn(3, 2, 2048) * 0.3
    assert torch.allclose(loss(audio, audio), torch.zeros(3), atol=1e-6)
    other = audio + 0.1 * torch.randn_like(audio)
    value = loss(other, audio)
    assert value.shape == (3,)
    assert torch.all(value > 0)


def test_stft_loss_grows_with_the_error():
    torch.manual_seed(0)
    loss = MultiResolutionSTFTLoss(FFT_SIZES)
    audio = torch.randn(1, 1, 2048) * 0.3
    noise = torch.randn_like(audio)
    small, large = loss(audio + 0.01 * noise, audio), loss(audio + 0.3 * noise, audio)
    assert large.item() > small.item()


def test_stft_loss_is_per_example():
    torch.manual_seed(0)
    loss = MultiResolutionSTFTLoss(FFT_SIZES)
    audio = torch.randn(2, 1, 2048) * 0.3
    fake = audio.clone()
    fake[1] += 0.2 * torch.randn_like(fake[1])
    value = loss(fake, audio)
    assert value[0].abs() < 1e-6 and value[1] > 0


def one_percent_noise(like: torch.Tensor) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return 0.01 * torch.randn(like.shape, generator=generator)


def at_level(audio: torch.Tensor, peak_db: float) -> torch.Tensor:
    """The audio scaled to a peak of ``peak_db`` dBFS."""
    return audio / audio.abs().max() * 10 ** (peak_db / 20)


def loss_and_gradient_norm(loss: torch.nn.Module, prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    prediction = prediction.clone().requires_grad_()
    value = loss(prediction, target)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(prediction.grad).all()
    return value.item(), prediction.grad.norm().item()


# Issue 11: the spectral convergence divided by the target's norm + 1e-7, so a silent target
# against 1% noise scored ~3e6 against ~10 for a real clip, and silent crops ruled training.
@pytest.mark.parametrize("weighting", [False, True])
def test_stft_loss_on_a_silent_target_is_of_the_order_of_a_real_clip(weighting):
    loss = StereoSTFTLoss(FFT_SIZES, perceptual_weighting=weighting)
    real = stereo_tone()
    silent = torch.zeros_like(real)
    on_real, real_grad = loss_and_gradient_norm(loss, real + one_percent_noise(real), real)
    on_silence, silence_grad = loss_and_gradient_norm(loss, silent + one_percent_noise(silent), silent)
    assert on_silence < 3 * on_real, f"silent target scores {on_silence:.4g}, a real clip {on_real:.4g}"
    assert silence_grad < 3 * real_grad, f"gradient norm {silence_grad:.4g} on silence, {real_grad:.4g} on a clip"


def test_stft_loss_on_a_dual_mono_target_is_of_the_order_of_a_stereo_one():
    loss = StereoSTFTLoss(FFT_SIZES, perceptual_weighting=True)
    stereo = stereo_tone()
    dual_mono = stereo[:, :1].repeat(1, 2, 1)  # the side channel (L - R) is exactly zero
    assert torch.equal(dual_mono[:, 0], dual_mono[:, 1])
    on_stereo, stereo_grad = loss_and_gradient_norm(loss, stereo + one_percent_noise(stereo), stereo)
    on_dual, dual_grad = loss_and_gradient_norm(loss, dual_mono + one_percent_noise(stereo), dual_mono)
    assert on_dual < 3 * on_stereo, f"dual-mono target scores {on_dual:.4g}, stereo {on_stereo:.4g}"
    assert dual_grad < 3 * stereo_grad


@pytest.mark.parametrize("peak_db", [-40.0, -60.0, -80.0, -100.0])
def test_stft_loss_stays_of_the_same_order_as_the_target_gets_quieter(peak_db):
    loss = StereoSTFTLoss(FFT_SIZES, perceptual_weighting=True)
    loud = at_level(stereo_tone(), -6.0)
    quiet = at_level(stereo_tone(), peak_db)
    on_loud, loud_grad = loss_and_gradient_norm(loss, loud + one_percent_noise(loud), loud)
    on_quiet, quiet_grad = loss_and_gradient_norm(loss, quiet + one_percent_noise(quiet), quiet)
    assert on_quiet < 3 * on_loud, f"{peak_db} dBFS target scores {on_quiet:.4g}, a -6 dBFS one {on_loud:.4g}"
    assert quiet_grad < 3 * loud_grad


def test_stft_loss_treats_a_minus_80_dbfs_target_as_nearly_silent():
    loss = StereoSTFTLoss(FFT_SIZES, perceptual_weighting=True)
    quiet = at_level(stereo_tone(), -80.0)
    missed = loss(torch.zeros_like(quiet), quiet).item()
    noisy = loss(quiet + one_percent_noise(quiet), quiet).item()
    # Decoding a -80 dBFS clip to silence is a small error; adding -40 dBFS noise to it is a large one.
    assert missed < 1.0 and noisy > 5 * missed


@pytest.mark.parametrize("case", ["silent", "quiet", "dual_mono", "real"])
def test_stft_loss_scores_a_perfect_prediction_zero_with_finite_gradients(case):
    real = stereo_tone()
    target = {
        "silent": torch.zeros_like(real),
        "quiet": at_level(real, -80.0),
        "dual_mono": real[:, :1].repeat(1, 2, 1),
        "real": real,
    }[case]
    loss = StereoSTFTLoss(FFT_SIZES, perceptual_weighting=True)
    value, _ = loss_and_gradient_norm(loss, target, target)
    assert value == pytest.approx(0.0, abs=1e-6)


def test_stft_loss_gradients_are_finite_at_exact_zeros():
    loss = StereoSTFTLoss(FFT_SIZES, perceptual_weighting=True)
    real = stereo_tone()
    silent = torch.zeros_like(real)
    # Silence against silence, silence against a clip, and a clip against silence.
    for prediction, target in ((silent, silent), (silent, real), (real, silent)):
        value, gradient = loss_and_gradient_norm(loss, prediction, target)
        assert math.isfinite(value) and math.isfinite(gradient)


def test_stft_loss_rejects_a_reference_level_below_the_floor():
    with pytest.raises(ValueError, match="convergence_reference_db"):
        MultiResolutionSTFTLoss(FFT_SIZES, floor_db=-60.0, convergence_reference_db=-80.0)


def test_the_configured_stft_floor_decides_what_counts_as_silence():
    """model.autoencoder.losses.stft_floor_db reaches the loss: white noise at -80 dBFS (per-bin level
    -80 dB in the noise-normalised STFT) against a silent target is 20 dB above a -100 dB floor, a
    log-magnitude distance of about ln(10) = 2.3 per bin, but 20 dB under a -60 dB floor, where
    both magnitudes sit on the floor (distance 0.5 ln(1 + 0.01) = 0.005)."""
    torch.manual_seed(0)
    noise = torch.randn(1, 2, 8192) * 10 ** (-80 / 20)
    silent = torch.zeros_like(noise)

    def loss_with(floor_db: float) -> float:
        cfg = AutoencoderLossConfig(stft_fft_sizes=[256], stft_perceptual_weighting=False, stft_floor_db=floor_db)
        return AutoencoderLosses(cfg).stft(noise, silent).item()

    assert loss_with(-100.0) > 1.5
    assert loss_with(-60.0) < 0.05


def test_an_stft_floor_above_the_convergence_reference_is_refused():
    from sa_train.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="stft_floor_db"):
        load_config(None, ["model.autoencoder.losses.stft_floor_db=-30"])


def test_a_weighting_is_unity_at_1khz_and_attenuates_low_frequencies():
    gains = a_weighting(torch.tensor([50.0, 1000.0, 3000.0]))
    assert gains[1] == pytest.approx(1.0)
    assert gains[0] < 0.1  # about -30 dB at 50 Hz
    assert gains[2] > 1.0  # A-weighting peaks between 2 and 4 kHz


def test_stereo_loss_weights_mid_side_and_left_right():
    torch.manual_seed(0)
    real = torch.randn(2, 2, 2048) * 0.3
    fake = real + 0.1 * torch.randn_like(real)
    base = MultiResolutionSTFTLoss(FFT_SIZES)
    mid_side_only = StereoSTFTLoss(FFT_SIZES, mid_side_weight=1.0, left_right_weight=0.0)(fake, real)
    left_right_only = StereoSTFTLoss(FFT_SIZES, mid_side_weight=0.0, left_right_weight=1.0)(fake, real)
    both = StereoSTFTLoss(FFT_SIZES, mid_side_weight=1.0, left_right_weight=0.5)(fake, real)
    expected_lr = base(fake[:, 0], real[:, 0]) + base(fake[:, 1], real[:, 1])
    assert torch.allclose(left_right_only, expected_lr, rtol=1e-5)
    assert torch.allclose(both, mid_side_only + 0.5 * left_right_only, rtol=1e-5)
    assert torch.all(mid_side_only > 0)


def plain_mrstft(prediction: torch.Tensor, target: torch.Tensor, weighting: bool) -> torch.Tensor:
    """The loss's definition written out on waveforms (batch, samples) -> (batch,): noise-normalised
    powers with a -100 dB floor, spectral convergence against the target's level + -40 dB, L1 of
    log magnitudes, mean over FFT_SIZES."""
    floor, reference = 10 ** (-100 / 10), 10 ** (-40 / 10)
    total = 0
    for n in FFT_SIZES:
        window = torch.hann_window(n, dtype=torch.float64)

        def power(x):
            spec = torch.stft(x.double(), n, hop_length=n // 4, window=window, center=True, pad_mode="constant",
                              return_complex=True)
            p = spec.abs().square() / window.square().sum()
            if weighting:
                p = p * a_weighting(torch.linspace(0, 22050, n // 2 + 1)).square()[:, None]
            return p.flatten(1)

        p, t = power(prediction), power(target)
        level = (t.sum(1) + t.shape[1] * reference).sqrt()
        convergence = ((t + floor).sqrt() - (p + floor).sqrt()).norm(dim=1) / level
        total = total + convergence + 0.5 * ((t + floor).log() - (p + floor).log()).abs().mean(1)
    return total / len(FFT_SIZES)


STEREO_CASES = {
    "stereo": lambda: (torch.randn(3, 2, 2048) * 0.3, torch.randn(3, 2, 2048) * 0.3),
    "dual-mono target": lambda: (torch.randn(3, 2, 2048) * 0.3, (torch.randn(3, 1, 2048) * 0.3).expand(3, 2, 2048)),
    "silent target": lambda: (torch.randn(3, 2, 2048) * 0.01, torch.zeros(3, 2, 2048)),
    "-80 dBFS target": lambda: (torch.randn(3, 2, 2048) * 0.01, torch.randn(3, 2, 2048) * 1e-4),
}


@pytest.mark.parametrize("weighting", [False, True])
@pytest.mark.parametrize("case", sorted(STEREO_CASES))
def test_stereo_loss_and_its_gradient_are_the_definition_on_mid_side_left_and_right(case, weighting):
    # The loss takes mid and side spectra as sums of left and right ones (the STFT is linear);
    # it must give what the definition gives on mid (L+R), side (L-R), left and right waveforms.
    torch.manual_seed(0)
    fake, real = STEREO_CASES[case]()
    fake.requires_grad_(True)
    got = StereoSTFTLoss(FFT_SIZES, perceptual_weighting=weighting)(fake, real)
    (grad,) = torch.autograd.grad(got.sum(), fake)
    pl, pr, tl, tr = fake[:, 0], fake[:, 1], real[:, 0], real[:, 1]
    expected = (0.5 * (plain_mrstft(pl + pr, tl + tr, weighting) + plain_mrstft(pl - pr, tl - tr, weighting))
                + 0.5 * (plain_mrstft(pl, tl, weighting) + plain_mrstft(pr, tr, weighting)))
    (expected_grad,) = torch.autograd.grad(expected.sum(), fake)
    assert torch.allclose(got.double(), expected, rtol=1e-4)
    assert torch.allclose(grad, expected_grad, rtol=1e-3, atol=1e-3 * expected_grad.abs().max().item())
    assert torch.allclose(MultiResolutionSTFTLoss(FFT_SIZES, perceptual_weighting=weighting)(pl, tl).double(),
                          plain_mrstft(pl, tl, weighting), rtol=1e-4)


def test_stereo_loss_on_mono_is_the_plain_loss():
    torch.manual_seed(0)
    real = torch.randn(2, 1, 2048) * 0.3
    fake = real + 0.1 * torch.randn_like(real)
    stereo = StereoSTFTLoss(FFT_SIZES)(fake, real)
    assert torch.allclose(stereo, MultiResolutionSTFTLoss(FFT_SIZES)(fake, real))


def test_discriminator_returns_logits_and_features_per_scale():
    disc = MultiScaleSTFTDiscriminator(2, fft_sizes=[256, 128], filters=4)
    logits, features = disc(torch.randn(3, 2, 2048))
    assert len(logits) == 2 and len(features) == 2
    for n_fft, scale_logits, scale_features in zip([256, 128], logits, features):
        frames, bins = 2048 // (n_fft // 4) + 1, n_fft // 2 + 1
        assert scale_logits.shape[:3] == (3, 1, frames)
        assert scale_logits.shape[3] == math.ceil(bins / 8)  # three frequency strides of 2
        assert len(scale_features) == 5
        assert all(f.shape[:2] == (3, 4) and f.shape[2] == frames for f in scale_features)


def test_discriminator_rejects_the_wrong_channel_count():
    disc = MultiScaleSTFTDiscriminator(2, fft_sizes=[128], filters=4)
    with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
        disc(torch.randn(1, 1, 1024))


def test_hinge_losses_have_their_textbook_values():
    confident_real = [torch.full((2, 1, 3, 4), 2.0)]
    confident_fake = [torch.full((2, 1, 3, 4), -2.0)]
    assert torch.equal(hinge_discriminator_loss(confident_real, confident_fake), torch.zeros(2))
    unsure = [torch.zeros(2, 1, 3, 4)]
    assert torch.allclose(hinge_discriminator_loss(unsure, unsure), torch.full((2,), 2.0))
    # Summed over scales.
    assert torch.allclose(hinge_discriminator_loss(unsure * 3, unsure * 3), torch.full((2,), 6.0))
    assert torch.allclose(hinge_generator_loss(confident_fake), torch.full((2,), 2.0))
    assert torch.allclose(hinge_generator_loss(confident_real), torch.full((2,), -2.0))


def test_feature_matching_is_zero_for_equal_features_and_per_example():
    real = [[torch.ones(2, 3, 4, 5), torch.ones(2, 3, 2, 5)]]
    fake = [[torch.ones(2, 3, 4, 5), torch.ones(2, 3, 2, 5)]]
    assert torch.equal(feature_matching_loss(real, fake), torch.zeros(2))
    fake[0][0][1] += 0.5
    value = feature_matching_loss(real, fake)
    assert value[0] == 0 and value[1] == pytest.approx(0.25)  # layer mean of (0.5, 0)


def small_loss_config() -> AutoencoderLossConfig:
    cfg = AutoencoderLossConfig()
    cfg.stft_fft_sizes = FFT_SIZES
    cfg.discriminator_fft_sizes = [256, 128]
    cfg.discriminator_filters = 4
    return cfg


def test_generator_losses_give_per_example_terms_and_a_weighted_total():
    torch.manual_seed(0)
    ae_cfg = AutoencoderConfig()
    ae_cfg.losses = small_loss_config()
    losses, disc = AutoencoderLosses(ae_cfg.losses), build_discriminator(ae_cfg)
    real = torch.randn(2, 2, 2048) * 0.3
    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_()
    kl = torch.tensor([1.0, 2.0])
    out = losses.generator_losses(real, fake, kl, disc, adversarial=True)
    assert set(out) == {"stft", "kl", "adversarial", "feature_matching", "total"}
    assert all(v.shape == (2,) for v in out.values())
    w = ae_cfg.losses
    expected = out["stft"] + w.kl_weight * kl + w.adversarial_weight * out["adversarial"] \
        + w.feature_matching_weight * out["feature_matching"]
    assert torch.allclose(out["total"], expected)
    assert torch.all(out["feature_matching"] > 0)
    out["total"].sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0

    warm_up = losses.generator_losses(real, fake, kl, disc, adversarial=False)
    assert torch.equal(warm_up["adversarial"], torch.zeros(2))
    assert torch.equal(warm_up["feature_matching"], torch.zeros(2))


def test_the_waveform_term_is_off_by_default_and_adds_its_weighted_mean_absolute_error():
    ae_cfg = AutoencoderConfig()
    ae_cfg.losses = small_loss_config()
    torch.manual_seed(1)
    real = torch.randn(2, 2, 2048) * 0.3
    fake = real + 0.1 * torch.randn_like(real)
    kl = torch.tensor([1.0, 2.0])
    paper = AutoencoderLosses(ae_cfg.losses).generator_losses(real, fake, kl, None, adversarial=False)
    assert "waveform_l1" not in paper  # the paper's recipe: STFT (+ adversarial) only
    ae_cfg.losses.waveform_l1_weight = 2.5
    out = AutoencoderLosses(ae_cfg.losses).generator_losses(real, fake, kl, None, adversarial=False)
    mean_abs = torch.tensor([(fake[i] - real[i]).abs().mean().item() for i in range(2)])
    assert torch.allclose(out["waveform_l1"], mean_abs)
    assert torch.allclose(out["total"], paper["total"] + 2.5 * mean_abs)
    # stable-audio-tools' `time.decay`: the weight shrinks by the decay every optimizer step.
    ae_cfg.losses.waveform_l1_decay = 0.5
    late = AutoencoderLosses(ae_cfg.losses).generator_losses(real, fake, kl, None, adversarial=False, step=3)
    assert torch.allclose(late["total"], paper["total"] + 2.5 * 0.5**3 * mean_abs)


def test_a_silent_reconstruction_of_a_tone_is_pulled_toward_it_only_by_the_waveform_term():
    """Why the option exists: the STFT losses see magnitudes only, so an all-silent output of a
    pure tone is a stationary point of them (zero gradient); the waveform term points at the tone."""
    tone = 0.3 * torch.sin(2 * math.pi * 440.0 * torch.arange(8192) / 44100).expand(1, 2, -1)
    grads = {}
    for weight in (0.0, 1.0):
        cfg = AutoencoderLossConfig()
        cfg.waveform_l1_weight = weight
        silent = torch.zeros(1, 2, 8192, requires_grad=True)
        out = AutoencoderLosses(cfg).generator_losses(tone, silent, torch.zeros(1), None, adversarial=False)
        out["total"].sum().backward()
        grads[weight] = silent.grad.flatten()
    assert torch.count_nonzero(grads[0.0]) == 0
    toward_tone = torch.nn.functional.cosine_similarity(-grads[1.0], tone.flatten(), dim=0)
    assert toward_tone > 0.8


def test_generator_losses_weigh_a_silent_crop_like_a_real_one():
    """A batch with a crop inside a pause: its STFT term must not dwarf the real crop's."""
    ae_cfg = AutoencoderConfig()
    ae_cfg.losses = small_loss_config()
    losses = AutoencoderLosses(ae_cfg.losses)
    real = torch.cat([stereo_tone(), torch.zeros(1, 2, 4096)])
    fake = (real + one_percent_noise(real)).requires_grad_()
    out = losses.generator_losses(real, fake, torch.zeros(2), None, adversarial=False)
    on_real, on_silence = out["stft"].tolist()
    assert on_silence < 3 * on_real, f"silent crop {on_silence:.4g}, real crop {on_real:.4g}"
    out["total"].mean().backward()
    assert torch.isfinite(fake.grad).all()
    assert fake.grad[1].norm() < 3 * fake.grad[0].norm()


def test_discriminator_losses_train_only_the_discriminator():
    torch.manual_seed(0)
    ae_cfg = AutoencoderConfig()
    ae_cfg.losses = small_loss_config()
    losses, disc = AutoencoderLosses(ae_cfg.losses), build_discriminator(ae_cfg)
    real = torch.randn(2, 2, 2048) * 0.3
    fake = (real + 0.1 * torch.randn_like(real)).requires_grad_()
    out = losses.discriminator_losses(real, fake, disc)
    assert out["total"].shape == (2,) and torch.all(out["total"] >= 0)
    out["total"].mean().backward()
    assert fake.grad is None
    assert all(p.grad is not None for p in disc.parameters())


@pytest.mark.slow
def test_tiny_vae_fits_one_short_clip():
    """A few hundred Adam steps on one 440 Hz stereo clip must cut the STFT loss by more than half."""
    torch.manual_seed(0)
    cfg = AutoencoderConfig()
    vae = AutoencoderVAE(cfg)
    losses = AutoencoderLosses(cfg.losses)
    clip = stereo_tone(8192)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    history = []
    for _ in range(200):
        out = vae(clip)
        terms = losses.generator_losses(clip, out.reconstruction, out.kl, discriminator=None, adversarial=False)
        terms["total"].mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append(terms["stft"].item())
    initial, final = history[0], sum(history[-10:]) / 10
    assert math.isfinite(final)
    assert final < 0.5 * initial, f"STFT loss went from {initial:.3f} to {final:.3f}"
