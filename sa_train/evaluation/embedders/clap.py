"""CLAP text and audio embeddings through transformers (ClapModel + ClapProcessor).

Loads from a local folder (no network) or a hub id such as ``laion/clap-htsat-unfused`` (which
downloads it: the user named a remote resource). Audio goes in mono at the feature extractor's
rate (48 kHz for the LAION models). Embeddings are the model's projected, L2-normalised ones.
"""

from __future__ import annotations

import os

import numpy as np

from sa_train.evaluation.audio import resample, to_mono


def _features(output):
    """get_*_features returns a tensor in older transformers, a model output in newer ones."""
    return output if hasattr(output, "detach") else output.pooler_output


class ClapEmbedder:
    """``embed_text(texts) -> (n, dim)``; ``embed_audio(audio (channels, samples), sr) -> (dim,)``."""

    name = "clap"

    def __init__(self, name_or_path: str, device: str = "cpu"):
        import torch
        from transformers import ClapModel, ClapProcessor

        self._torch = torch
        self.name_or_path = name_or_path
        try:
            self.model = ClapModel.from_pretrained(name_or_path).to(device).eval()
            self.processor = ClapProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            where = "folder" if os.path.isdir(name_or_path) else "hub id or folder"
            raise ValueError(f"cannot load a CLAP model and processor from {where} {name_or_path!r}: {err}") from None
        self.device = torch.device(device)
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)
        # A fused model takes 4 stacked mels per clip, an unfused one 1: match the extractor to the
        # model rather than trusting the saved extractor's setting.
        fused = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
        self._truncation = "fusion" if fused else "rand_trunc"

    def embed_text(self, texts: list[str]) -> np.ndarray:
        tokens = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with self._torch.no_grad():
            out = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
        return _features(out).double().cpu().numpy()

    def embed_audio(self, audio: np.ndarray, sr: int) -> np.ndarray:
        mono = to_mono(resample(audio, sr, self.sample_rate)).astype(np.float64)
        # The feature extractor draws random crops (long clips) and a random "is_longer" flag from
        # NumPy's global generator: seed it for a reproducible score, then restore the caller's state.
        state = np.random.get_state()
        try:
            np.random.seed(0)
            inputs = self.processor.feature_extractor(
                mono, sampling_rate=self.sample_rate, truncation=self._truncation, return_tensors="pt"
            )
        finally:
            np.random.set_state(state)
        with self._torch.no_grad():
            out = self.model.get_audio_features(
                input_features=inputs["input_features"].to(self.device, self.model.dtype),
                is_longer=inputs["is_longer"].to(self.device) if "is_longer" in inputs else None,
            )
        return _features(out)[0].double().cpu().numpy()
