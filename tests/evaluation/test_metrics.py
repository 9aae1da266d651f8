"""FD, KL and CLAP score against closed forms and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg

from sa_train.evaluation.metrics import (
    clap_score, cosine_similarities, frechet_distance, gaussian_stats, kl_divergence,
)


def _random_spd(rng, dim, rank=None):
    a = rng.standard_normal((dim, rank or dim))
    return a @ a.T + (0 if rank else 1e-3) * np.eye(dim)


def test_fd_of_diagonal_gaussians_matches_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_fd_of_full_covariances_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)  # symmetric


def test_fd_of_identical_statistics_is_zero():
    rng = np.random.default_rng(1)
    mu, sigma = gaussian_stats(rng.standard_normal((500, 16)) * 3.0)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_fd_is_stable_and_real_for_singular_covariances():
    rng = np.random.default_rng(2)
    # Fewer frames than dimensions: rank-deficient covariances, where sqrtm(S1 S2) goes complex.
    mu1, s1 = gaussian_stats(rng.standard_normal((10, 64)))
    mu2, s2 = gaussian_stats(rng.standard_normal((12, 64)) + 0.5)
    assert np.linalg.matrix_rank(s1) < 64 and np.linalg.matrix_rank(s2) < 64
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(fd, float) and math.isfinite(fd) and fd > 0
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-6
    # A known singular case: variance only along the first axis.
    assert frechet_distance(np.zeros(3), np.diag([1.0, 0, 0]), np.zeros(3), np.diag([4.0, 0, 0])) == pytest.approx(1.0)


def test_fd_works_in_float64_whatever_the_input_dtype():
    rng = np.random.default_rng(3)
    s1, s2 = _random_spd(rng, 8), _random_spd(rng, 8)
    mu = rng.standard_normal(8)
    as64 = frechet_distance(mu, s1, mu + 1, s2)
    as32 = frechet_distance(mu.astype(np.float32), s1.astype(np.float32), (mu + 1).astype(np.float32),
                            s2.astype(np.float32))
    assert as32 == pytest.approx(as64, rel=1e-5)


@pytest.mark.parametrize("bad", ["shape", "not_psd", "nan", "asymmetric"])
def test_fd_rejects_invalid_statistics(bad):
    mu, sigma = np.zeros(3), np.eye(3)
    other = {"shape": np.eye(4), "not_psd": np.diag([1.0, -1.0, 1.0]), "nan": np.full((3, 3), np.nan),
             "asymmetric": np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]])}[bad]
    with pytest.raises(ValueError):
        frechet_distance(mu, sigma, mu, other)


def test_gaussian_stats_are_the_mean_and_unbiased_covariance():
    x = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu, [3.0, 4.0])
    np.testing.assert_allclose(sigma, [[4.0, 2.0], [2.0, 4.0]])  # sums of products / (n - 1)
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(x[:1])


def test_kl_of_known_distributions_matches_hand_computation():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert float(kl_divergence(p, q)) == pytest.approx(expected, rel=1e-12)
    reverse = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert float(kl_divergence(q, p)) == pytest.approx(reverse, rel=1e-12)  # direction matters


def test_kl_is_zero_for_equal_distributions_and_per_row_for_batches():
    p = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    q = np.array([[0.2, 0.3, 0.5], [0.8, 0.1, 0.1]])
    kl = kl_divergence(p, q)
    assert kl.shape == (2,)
    assert kl[0] == pytest.approx(0.0, abs=1e-12)
    assert kl[1] == pytest.approx(0.1 * math.log(0.1 / 0.8) + 0.8 * math.log(0.8 / 0.1), rel=1e-12)


def test_kl_treats_zero_reference_mass_as_zero_and_normalises_weights():
    # 0 log 0 = 0; counts are normalised to probabilities first.
    assert float(kl_divergence([0.0, 1.0], [0.5, 0.5])) == pytest.approx(math.log(2.0))
    assert float(kl_divergence([2.0, 2.0], [9.0, 1.0])) == pytest.approx(float(kl_divergence([0.5, 0.5], [0.9, 0.1])))
    assert math.isfinite(float(kl_divergence([0.5, 0.5], [1.0, 0.0])))  # q floored, not infinite
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence([0.5, 0.5], [-1.0, 2.0])


def test_clap_score_is_the_mean_cosine_similarity_of_known_vectors():
    text = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    audio = np.array([[3.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarities(text, audio), [1.0, 0.0, 1 / math.sqrt(2)])
    assert clap_score(text, audio) == pytest.approx((1.0 + 0.0 + 1 / math.sqrt(2)) / 3)
    with pytest.raises(ValueError):
        clap_score(text, audio[:2])
    with pytest.raises(ValueError, match="zeros"):
        clap_score(np.zeros((1, 2)), np.ones((1, 2)))


def test_si_sdr_and_silence_level_have_their_closed_forms():
    import math

    import numpy as np

    from sa_train.evaluation.reconstruction import level_dbfs, si_sdr_db

    rng = np.random.default_rng(0)
    reference = rng.standard_normal(44100)
    noise = rng.standard_normal(44100)
    noise -= noise.mean()
    noise -= np.dot(noise, reference - reference.mean()) / np.dot(reference - reference.mean(), reference - reference.mean()) * (reference - reference.mean())
    noise *= np.linalg.norm(reference - reference.mean()) / np.linalg.norm(noise) * 0.1  # 20 dB below
    assert si_sdr_db(0.5 * reference + noise * 0.5, reference) == pytest.approx(20.0, abs=1e-6)  # scale-invariant
    t = np.arange(44100) / 44100
    assert level_dbfs(np.sin(2 * math.pi * 440 * t)) == pytest.approx(-3.0103, abs=1e-3)
    assert level_dbfs(np.zeros(10)) == float("-inf")


def test_a_vae_that_decodes_everything_to_the_same_noise_scores_below_zero_db():
    import numpy as np
    import torch

    from sa_train.evaluation.reconstruction import reconstruction_figures

    class Collapsed(torch.nn.Module):
        def encode(self, audio):
            return torch.zeros(audio.shape[0], 4, audio.shape[-1] // 8)

        def decode(self, latents):
            g = torch.Generator().manual_seed(0)
            return 0.01 * torch.randn(latents.shape[0], 2, latents.shape[-1] * 8, generator=g)

    t = np.arange(8000) / 44100
    clip = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    figures = reconstruction_figures(Collapsed(), [clip], downsampling=8)
    assert figures["vae_si_sdr_db"] < -10
    assert figures["vae_silence_dbfs"] == pytest.approx(-40.0, abs=0.5)


def test_vae_kind_figure_counts_the_reconstructions_the_kind_tagger_still_recognises():
    # Generated audio is decoded by the same VAE: if it turns drum hits into noise, generated drums
    # will likely be heard as noise too. A perfect VAE keeps every kind; one that decodes
    # everything to the same noise keeps only the noise clips (2 of 8).
    import numpy as np
    import torch

    from sa_train.data.synth import synth_example
    from sa_train.evaluation.reconstruction import reconstruction_figures

    class Perfect(torch.nn.Module):
        def encode(self, audio):
            return audio

        def decode(self, latents):
            return latents

    class Collapsed(Perfect):
        def decode(self, latents):
            g = torch.Generator().manual_seed(0)
            return 0.3 * torch.randn(latents.shape, generator=g)

    examples = [synth_example(i, 3, min_seconds=1.5, max_seconds=2.0) for i in range(8)]
    clips = [audio.T for audio, _, _ in examples]
    kinds = [fields["kind"] for _, _, fields in examples]
    assert sorted(set(kinds)) == ["chord", "drums", "noise", "tone"]

    perfect = reconstruction_figures(Perfect(), clips, downsampling=1, kinds=kinds)
    assert perfect["vae_kind_pass_rate"] == 1.0 and perfect["vae_kinds_lost"] == []
    collapsed = reconstruction_figures(Collapsed(), clips, downsampling=1, kinds=kinds)
    assert collapsed["vae_kind_pass_rate"] == pytest.approx(2 / 8)
    assert collapsed["vae_kinds_lost"] == ["chord", "drums", "tone"]
    assert "vae_kind_pass_rate" not in reconstruction_figures(Perfect(), clips, downsampling=1)
    with pytest.raises(ValueError, match="3 kinds for 8 clips"):
        reconstruction_figures(Perfect(), clips, downsampling=1, kinds=kinds[:3])
