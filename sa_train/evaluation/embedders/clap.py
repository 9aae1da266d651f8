"""CLAP text and audio embeddings through transformers (ClapModel + ClapProcessor).

Loads from a local folder (no network) or a hub id such as ``laion/clap-htsat-fused`` (which
downloads it: the user named a remote resource). Audio goes in mono at the feature extractor's
rate (48 kHz for the LAION models), peak-normalised to -1 dBFS as the paper's metric code does.
Embeddings are the model's projected, L2-normalised ones.

The paper's code scores with laion_clap's ``CLAP_Module`` and the checkpoint
``630k-audioset-fusion-best.pt``; ``laion/clap-htsat-fused`` is that checkpoint converted to
transformers. laion_clap itself is not used, nor compared against in the tests: it requires
numpy < 2 (the stack pins numpy 2.4) and its module downloads ``roberta-base`` when built.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from sa_train.evaluation.audio import resample, to_mono
from sa_train.evaluation.embedders.weights import README_SECTION, peak_normalize, resolve_device

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")  # older, newer transformers


def _features(output):
    """get_*_features returns a tensor in older transformers, a model output in newer ones."""
    return output if hasattr(output, "detach") else output.pooler_output


def _check_folder(name_or_path: str) -> None:
    """A local folder must hold a saved ClapModel and its processor; name what is missing."""
    looks_local = os.path.isabs(name_or_path) or name_or_path.startswith(".") or os.path.exists(name_or_path)
    if not looks_local:
        return  # a hub id: transformers downloads it (the user named a remote resource)
    hint = (f"save one there with `hf download laion/clap-htsat-fused --local-dir {name_or_path}` on a machine "
            f"with network (see {README_SECTION})")
    if not os.path.isdir(name_or_path):
        raise ValueError(f"CLAP model folder {name_or_path!r} does not exist; {hint}")

    def has_any(names: tuple[str, ...]) -> bool:
        return any(os.path.isfile(os.path.join(name_or_path, f)) for f in names)

    required = (("config.json",), PROCESSOR_FILES, WEIGHT_FILES)
    missing = [" or ".join(names[:2]) for names in required if not has_any(names)]
    if missing:
        raise ValueError(f"cannot load a CLAP model from folder {name_or_path!r}: it has no {', '.join(missing)}; "
                         f"{hint}")


class ClapEmbedder:
    """``embed_text(texts) -> (n, dim)``; ``embed_audio(audio (channels, samples), sr) -> (dim,)``."""

    name = "clap"

    def __init__(self, name_or_path: str, device: Optional[str] = None, peak_normalize_dbfs: Optional[float] = -1.0):
        import torch
        from transformers import ClapModel, ClapProcessor

        name_or_path = os.path.expanduser(name_or_path)
        _check_folder(name_or_path)
        self._torch = torch
        self.name_or_path = name_or_path
        self.device = resolve_device(device)
        self._peak_dbfs = peak_normalize_dbfs
        try:
            self.model = ClapModel.from_pretrained(name_or_path).to(self.device).eval()
            self.processor = ClapProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as err:
            where = "folder" if os.path.isdir(name_or_path) else "hub id or folder"
            raise ValueError(f"cannot load a CLAP model and processor from {where} {name_or_path!r}: {err}") from None
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
        mono = peak_normalize(to_mono(resample(audio, sr, self.sample_rate)), self._peak_dbfs).astype(np.float64)
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
