"""Score a folder of generated audio: FD, KL, CLAP score, timing accuracy and prompt adherence.

Input is any generator's output: a folder whose ``manifest.jsonl`` lists ``path``, ``prompt``
and ``seconds_total`` per clip (what `sa-train generate` writes). Metric names carry what they
were computed with, so proxies never pass for the paper's numbers:

    fd_<embedder>            Frechet distance (fd_openl3 is the paper's FD_openl3)
    kl_<tagger>_ref_gen      mean over clips of KL(reference || generated) of the prompt's classes
    kl_<tagger>_gen_ref      the same with KL(generated || reference): the direction of the paper's
                             metric code (stable-audio-metrics' passt_kld), for comparing with its table
    clap_score               mean text-audio cosine similarity (with a CLAP model)
    timing_mae_s ...         detected end of content against seconds_total (see timing.py), over
                             the clips that run on past their request; timing_num_unmeasurable
                             counts the others (no timing figure at all when none has room)
    adherence_* ...          pitch, tempo, burst count, kind from the audio (see adherence.py)
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import numpy as np

from sa_train.evaluation.adherence import adherence_summary, measure_adherence
from sa_train.evaluation.audio import list_clips, load_audio
from sa_train.evaluation.embedders import (
    AudioEmbedder, Tagger, TextAudioEmbedder, build_embedder, build_tagger, build_text_audio_embedder,
)
from sa_train.evaluation.embedders.spectral import KIND_CLASSES
from sa_train.evaluation.metrics import clap_score, cosine_similarities, frechet_distance, gaussian_stats, kl_divergence
from sa_train.evaluation.progress import progress
from sa_train.evaluation.reference import ReferenceSet, identity, load_reference, prompt_key
from sa_train.evaluation.timing import (
    DEFAULT_ABSOLUTE_DB, MIN_ROOM_SECONDS, TimingReport, detect_content_end, timing_measurable, timing_report,
)

logger = logging.getLogger(__name__)

REPORT_JSON = "evaluation.json"
REPORT_MARKDOWN = "evaluation.md"
TIMING_PLOT = "timing.png"


def fd_key(embedder_name: str) -> str:
    return f"fd_{embedder_name}"


def kl_key(tagger_name: str) -> str:
    return f"kl_{tagger_name}_ref_gen"


def kl_gen_ref_key(tagger_name: str) -> str:
    return f"kl_{tagger_name}_gen_ref"


@dataclass
class ClipResult:
    """Everything measured on one generated clip (None where not measured)."""

    path: str
    prompt: Optional[str]
    seconds_total: Optional[float]
    clip_seconds: float
    detected_end_s: Optional[float] = None  # None also where the clip has no room after seconds_total
    timing_measurable: Optional[bool] = None  # None without seconds_total
    kl: Optional[float] = None  # KL(reference || generated)
    kl_gen_ref: Optional[float] = None  # KL(generated || reference)
    clap_similarity: Optional[float] = None
    predicted_kind: Optional[str] = None
    adherence: dict = field(default_factory=dict)  # measured / errors / passed


@dataclass
class EvaluationResult:
    metrics: dict[str, float]
    clips: list[ClipResult]
    settings: dict[str, Any]
    timing: Optional[TimingReport] = None
    notes: list[str] = field(default_factory=list)  # why a metric is missing, caveats
    files: dict[str, str] = field(default_factory=dict)  # report name -> path


def _note(result: EvaluationResult, message: str, level: int = logging.WARNING) -> None:
    logger.log(level, message)
    result.notes.append(message)


def run_evaluation(
    generated_dir: str,
    reference: Optional[str] = None,
    embedder: Union[str, AudioEmbedder, None] = "spectral",
    tagger: Union[str, Tagger, None] = "synth_kind",
    clap: Union[str, TextAudioEmbedder, None] = None,
    cache_dir: Optional[str] = None,
    out_dir: Optional[str] = None,
    timing_bins: Optional[Sequence[float]] = None,
    write_report: bool = True,
    silence_floor_db: float = DEFAULT_ABSOLUTE_DB,
    show_progress: Optional[bool] = None,
) -> EvaluationResult:
    """Measure every clip of ``generated_dir`` and summarise; see the module docstring for the
    metric names. ``reference`` (a folder of audio with optional manifest, or a stats file) is
    needed for FD and KL. Reports go to ``out_dir`` (default ``<generated_dir>/evaluation``).
    ``silence_floor_db`` (dBFS): quieter frames are never content for the timing detector; raise it
    to the level at which the autoencoder decodes silence when that is above -60.
    ``show_progress``: progress bars on stderr over the reference and generated clips (None: when
    stderr is a terminal)."""
    entries = list_clips(generated_dir, require_manifest=True)
    embedder = build_embedder(embedder) if embedder is not None else None
    tagger = build_tagger(tagger) if tagger is not None else None
    clap = build_text_audio_embedder(clap) if clap is not None else None
    settings = {
        "generated": os.path.abspath(generated_dir), "reference": reference,
        "embedder": identity(embedder) if embedder else None, "tagger": identity(tagger) if tagger else None,
        "clap": getattr(clap, "name_or_path", getattr(clap, "name", None)) if clap else None,
        "kl_direction": "KL(reference || generated)",
        "kl_gen_ref_direction": "KL(generated || reference), as the paper's metric code",
        "timing_silence_floor_dbfs": silence_floor_db,
    }
    result = EvaluationResult({"num_clips": float(len(entries))}, [], settings)
    for model in (embedder, tagger):
        if model is not None and str(getattr(model, "settings", {}).get("weights", "")).startswith("random"):
            _note(result, f"the {model.name} model has random weights ({model.settings['weights']}): its metric "
                          "checks the pipeline only and means nothing")
    ref = ReferenceSet()
    if reference is not None:
        ref = load_reference(reference, embedder, tagger, cache_dir, show_progress)
        settings["reference_content_hash"] = ref.content_hash
    elif embedder is not None or tagger is not None:
        _note(result, "no reference given: FD and KL are not computed", logging.INFO)

    frames, probs, clap_audio, adherence = [], [], [], []
    synth_kinds = tagger is not None and tuple(tagger.classes) == KIND_CLASSES
    for entry in progress(entries, len(entries), "generated", show_progress):
        audio, sr = load_audio(entry.path)
        clip = ClipResult(entry.path, entry.prompt, entry.seconds_total, audio.shape[1] / sr)
        if embedder is not None and ref.stats is not None:
            frames.append(embedder.embed(audio, sr))
        if tagger is not None:
            p = tagger.class_probabilities(audio, sr)
            probs.append(p)
            if synth_kinds:
                clip.predicted_kind = KIND_CLASSES[int(np.argmax(p))]
            if ref.probabilities and entry.prompt is not None and prompt_key(entry.prompt) in ref.probabilities:
                ref_p = ref.probabilities[prompt_key(entry.prompt)]
                clip.kl = float(kl_divergence(ref_p, p))
                clip.kl_gen_ref = float(kl_divergence(p, ref_p))
        if clap is not None:
            clap_audio.append(clap.embed_audio(audio, sr))
        if entry.seconds_total is not None:
            clip.timing_measurable = timing_measurable(entry.seconds_total, clip.clip_seconds)
            if clip.timing_measurable:
                clip.detected_end_s = detect_content_end(audio, sr, absolute_db=silence_floor_db)
        if entry.prompt is not None:
            measured = measure_adherence(audio, sr, entry.prompt, clip.predicted_kind)
            adherence.append(measured)
            if measured.measurable:
                clip.adherence = {"measured": measured.measured, "errors": measured.errors, "passed": measured.passed}
        result.clips.append(clip)

    _summarise_fd(result, embedder, ref, frames)
    _summarise_kl(result, tagger, ref)
    if clap is not None:
        _summarise_clap(result, clap, clap_audio)
    _summarise_timing(result, timing_bins)
    result.metrics.update(adherence_summary(adherence))
    if write_report:
        from sa_train.evaluation.report import write_reports

        out_dir = out_dir or os.path.join(generated_dir, "evaluation")
        result.files = write_reports(result, out_dir)
    return result


def _summarise_fd(result: EvaluationResult, embedder, ref: ReferenceSet, frames: list) -> None:
    if embedder is None or ref.stats is None:
        return
    embeddings = np.concatenate(frames)
    if embeddings.shape[0] < 2:
        _note(result, f"FD needs at least 2 embedding frames; the generated clips gave {embeddings.shape[0]}")
        return
    if embeddings.shape[0] <= embeddings.shape[1]:
        result.notes.append(
            f"FD from {embeddings.shape[0]} frames of {embeddings.shape[1]} dimensions: the covariance is "
            "rank-deficient and FD is biased upwards; compare only runs with the same clip count"
        )
    mu, sigma = gaussian_stats(embeddings)
    result.metrics[fd_key(embedder.name)] = frechet_distance(mu, sigma, ref.stats.mu, ref.stats.sigma)
    result.metrics["fd_num_frames"] = float(embeddings.shape[0])


def _summarise_kl(result: EvaluationResult, tagger, ref: ReferenceSet) -> None:
    if tagger is None or ref.probabilities is None:
        if tagger is not None and ref.source:
            _note(result, "KL needs a reference folder with prompts (a stats file has none): not computed")
        return
    values = [c.kl for c in result.clips if c.kl is not None]
    if not values:
        _note(result, "no generated prompt matches a reference prompt: KL not computed")
        return
    result.metrics[kl_key(tagger.name)] = float(np.mean(values))
    gen_ref = [c.kl_gen_ref for c in result.clips if c.kl_gen_ref is not None]
    result.metrics[kl_gen_ref_key(tagger.name)] = float(np.mean(gen_ref))
    result.metrics["kl_num_matched"] = float(len(values))
    if len(values) < len(result.clips):
        result.notes.append(f"KL over the {len(values)} of {len(result.clips)} clips whose prompt is in the reference")


def _summarise_clap(result: EvaluationResult, clap, clap_audio: list) -> None:
    pairs = [(c.prompt, a) for c, a in zip(result.clips, clap_audio) if c.prompt is not None]
    if not pairs:
        _note(result, "no prompts in the manifest: CLAP score not computed")
        return
    text = clap.embed_text([p for p, _ in pairs])
    audio = np.stack([a for _, a in pairs])
    sims = cosine_similarities(text, audio)
    for clip, sim in zip([c for c in result.clips if c.prompt is not None], sims):
        clip.clap_similarity = float(sim)
    result.metrics["clap_score"] = clap_score(text, audio)


def _summarise_timing(result: EvaluationResult, bins) -> None:
    requested = [c for c in result.clips if c.seconds_total is not None]
    if not requested:
        _note(result, "no seconds_total in the manifest: timing accuracy not computed")
        return
    timed = [c for c in requested if c.timing_measurable]
    unmeasurable = [c for c in requested if not c.timing_measurable]
    if unmeasurable:
        # Counted, never scored as 0: a clip that stops at its request cannot show a late end.
        result.metrics["timing_num_unmeasurable"] = float(len(unmeasurable))
        longest = max(c.seconds_total for c in unmeasurable)
        clip_lengths = sorted({round(c.clip_seconds, 3) for c in unmeasurable})
        scope = ("timing accuracy is not measurable" if not timed
                 else f"timing figures are over the other {len(timed)} clips only")
        _note(result, f"{len(unmeasurable)} of {len(requested)} clips do not run {MIN_ROOM_SECONDS:g} s past their "
                      f"requested seconds_total (requests up to {longest:.3g} s in clips of "
                      f"{', '.join(f'{x:g}' for x in clip_lengths[:3])}{' ...' if len(clip_lengths) > 3 else ''} s), "
                      f"so a late end cannot show: {scope}. Generate whole-window clips (`sa-train generate "
                      f"--full-window`) from a model whose window (data.window_samples / data.sample_rate) is "
                      f"longer than every request")
    if not timed:
        return
    result.timing = timing_report([c.detected_end_s for c in timed], [c.seconds_total for c in timed], bins)
    result.metrics.update(result.timing.to_metrics())


def evaluate_folder(
    generated_dir: str,
    reference: Optional[str] = None,
    embedder: Union[str, AudioEmbedder, None] = "spectral",
    tagger: Union[str, Tagger, None] = "synth_kind",
    clap: Union[str, TextAudioEmbedder, None] = None,
    cache_dir: Optional[str] = None,
    out_dir: Optional[str] = None,
    timing_bins: Optional[Sequence[float]] = None,
    write_report: bool = True,
    silence_floor_db: float = DEFAULT_ABSOLUTE_DB,
    show_progress: Optional[bool] = None,
) -> dict[str, float]:
    """The metrics of :func:`run_evaluation` as a flat ``{name: float}`` (NaN-free)."""
    result = run_evaluation(generated_dir, reference, embedder, tagger, clap, cache_dir, out_dir, timing_bins,
                            write_report, silence_floor_db, show_progress)
    return {k: float(v) for k, v in result.metrics.items() if v is not None and not math.isnan(v)}
