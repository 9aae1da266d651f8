"""Pluggable embedders and taggers for the evaluation metrics.

Three small protocols, one per metric:

- :class:`AudioEmbedder` (FD): frame embeddings of a clip. Real: ``openl3`` (the paper's FD_openl3;
  needs ``torchopenl3``). Built in: ``spectral`` (log-mel band statistics; a proxy).
- :class:`Tagger` (KL): class probabilities of a clip. Real: ``passt`` (the paper's KL_passt;
  needs ``hear21passt``). Built in: ``synth_kind`` (the synthetic dataset's four kinds; a proxy).
- :class:`TextAudioEmbedder` (CLAP score): a transformers ClapModel from a hub id or a folder.

The real models' packages are the ``eval`` extra (``pip install 'sa_train[eval]'``); their weights
come from a local file or folder, their usual download, or seeded random init (see ``weights.py``).

``name`` and ``settings`` identify an embedder in the reference-statistics cache key, so change
either whenever the numbers an embedder produces change.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, Union, runtime_checkable

import numpy as np


@runtime_checkable
class AudioEmbedder(Protocol):
    """Frame embeddings for the Frechet distance."""

    name: str
    settings: dict[str, Any]
    sample_rate: int  # the rate the embedder works at; clips are resampled to it

    def embed(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """``audio: (channels, samples)`` at ``sr`` -> ``(frames, dim)`` embeddings."""
        ...


@runtime_checkable
class Tagger(Protocol):
    """Class probabilities for the KL divergence."""

    name: str
    settings: dict[str, Any]
    classes: Sequence[str]

    def class_probabilities(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """``audio: (channels, samples)`` at ``sr`` -> ``(classes,)`` probabilities summing to 1."""
        ...


@runtime_checkable
class TextAudioEmbedder(Protocol):
    """Joint text-audio embeddings for the CLAP score."""

    name: str

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """``texts`` -> ``(n, dim)``."""
        ...

    def embed_audio(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """``audio: (channels, samples)`` at ``sr`` -> ``(dim,)``."""
        ...


def _spectral(**kwargs: Any) -> AudioEmbedder:
    from sa_train.evaluation.embedders.spectral import SpectralEmbedder

    return SpectralEmbedder(**kwargs)


def _openl3(**kwargs: Any) -> AudioEmbedder:
    from sa_train.evaluation.embedders.openl3 import OpenL3Embedder

    return OpenL3Embedder(**kwargs)


def _synth_kind(**kwargs: Any) -> Tagger:
    from sa_train.evaluation.embedders.spectral import SynthKindTagger

    return SynthKindTagger(**kwargs)


def _passt(**kwargs: Any) -> Tagger:
    from sa_train.evaluation.embedders.passt import PasstTagger

    return PasstTagger(**kwargs)


EMBEDDERS: dict[str, Callable[..., AudioEmbedder]] = {"spectral": _spectral, "openl3": _openl3}
TAGGERS: dict[str, Callable[..., Tagger]] = {"synth_kind": _synth_kind, "passt": _passt}


def build_embedder(embedder: Union[str, AudioEmbedder], **kwargs: Any) -> AudioEmbedder:
    """An embedder by name (``spectral``, ``openl3``) or the given object unchanged."""
    if not isinstance(embedder, str):
        return embedder
    if embedder not in EMBEDDERS:
        raise ValueError(f"unknown embedder {embedder!r}; choose one of {sorted(EMBEDDERS)}")
    return EMBEDDERS[embedder](**kwargs)


def build_tagger(tagger: Union[str, Tagger], **kwargs: Any) -> Tagger:
    """A tagger by name (``synth_kind``, ``passt``) or the given object unchanged."""
    if not isinstance(tagger, str):
        return tagger
    if tagger not in TAGGERS:
        raise ValueError(f"unknown tagger {tagger!r}; choose one of {sorted(TAGGERS)}")
    return TAGGERS[tagger](**kwargs)


def build_text_audio_embedder(clap: Union[str, TextAudioEmbedder], **kwargs: Any) -> TextAudioEmbedder:
    """A CLAP embedder from a hub id or local folder, or the given object unchanged."""
    if not isinstance(clap, str):
        return clap
    from sa_train.evaluation.embedders.clap import ClapEmbedder

    return ClapEmbedder(clap, **kwargs)


class MissingPackageError(ValueError):
    """An optional package an embedder needs is not installed; the message names the pip package."""


def require_package(module: str, pip_name: str, purpose: str) -> Any:
    """Import ``module`` or raise :class:`MissingPackageError` saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingPackageError(
            f"{purpose} needs the `{pip_name}` package, which is not installed ({err}); install it with "
            f"`pip install {pip_name}` (or all metric packages: `pip install 'sa_train[eval]'`), or use the "
            "built-in proxy instead"
        ) from None
