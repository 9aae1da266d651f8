"""Loss-curve PNGs a person can read: each VAE term visible, not flattened under the largest one."""

from __future__ import annotations

import pytest
from PIL import Image

from sa_train.tracking.media import _pyplot, loss_curves_figure, write_loss_curves_png

# The shape of a real VAE run's curves (bench_learning, every 250 steps): KL near 200, STFT falling 7 -> 2,
# adversarial and feature matching under 1 (and 0 during the adversarial warm-up).
STEPS = range(250, 2501, 250)
VAE_CURVES = {
    "train/kl": [(s, 200.0 - 0.01 * s) for s in STEPS],
    "train/stft": [(s, 7.0 - 0.002 * s) for s in STEPS],
    "train/adversarial": [(s, 0.0 if s < 500 else 0.5) for s in STEPS],
    "train/feature_matching": [(s, 0.1 + 0.0001 * s) for s in STEPS],
}


def test_each_loss_term_gets_a_panel_scaled_to_its_own_values():
    fig = loss_curves_figure(VAE_CURVES, "autoencoder")
    try:
        panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
        assert set(panels) == set(VAE_CURVES)
        # The STFT term's fall 7 -> 2 spans most of its panel's height, rather than a sliver under KL's 200.
        low, high = panels["train/stft"].get_ylim()
        assert high < 10 and low > 1
        assert panels["train/stft"].get_yscale() == "log"
        # A term that is 0 during the warm-up cannot go on a log axis.
        assert panels["train/adversarial"].get_yscale() == "linear"
    finally:
        _pyplot().close(fig)


def test_the_png_is_written_with_every_panel(tmp_path):
    path = write_loss_curves_png(VAE_CURVES, tmp_path / "plots" / "loss_curves.png", "autoencoder")
    with Image.open(path) as image:
        width, height = image.size
    # Four panels in a grid of three columns: two rows, wider than tall.
    assert width > height > 400


def test_curves_without_points_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no loss curve has any points"):
        write_loss_curves_png({"train/loss": []}, tmp_path / "x.png")
