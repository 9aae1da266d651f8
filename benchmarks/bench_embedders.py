"""Metric-model benchmark: clips embedded per second by each of the paper's metric models.

Each model is the real module at its real size, with seeded random weights (speed does not depend
on the weights' values, and nothing is downloaded): OpenL3 mel256/512 (torchopenl3), PaSST-S
(hear21passt, 10 s windows every 5 s) and CLAP (a transformers ClapModel with the architecture of
laion/clap-htsat-fused: HTSAT-tiny audio tower with fusion, RoBERTa-base text tower), each through
its sa_train embedder, so resampling, windowing and batching are counted; the built-in spectral
proxy is the baseline. Clips are stereo 44.1 kHz (what sa_train generates), ``--seconds`` long; the
first clip warms up and is not counted. On a GPU the models run there (``--device auto``).

Prints one line per model and appends a dated line to benchmarks/RESULTS.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m benchmarks.bench_embedders
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.results import cpu_model, record  # noqa: E402

SR = 44100
MODELS = ("spectral", "openl3", "passt", "clap")


def make_clips(count: int, seconds: float) -> list[np.ndarray]:
    """``count`` stereo clips ``(2, samples)``: two tones plus noise, different per clip."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    clips = []
    for i in range(count):
        left = 0.3 * np.sin(2 * np.pi * (220 + 55 * i) * t) + 0.05 * rng.standard_normal(t.size)
        right = 0.3 * np.sin(2 * np.pi * (330 + 55 * i) * t) + 0.05 * rng.standard_normal(t.size)
        clips.append(np.stack([left, right]).astype(np.float32))
    return clips


def full_size_clap_folder(folder: str) -> str:
    """A ClapModel with laion/clap-htsat-fused's architecture and random weights, saved with a
    48 kHz fusion feature extractor and a byte-level tokenizer (the real one needs a download)."""
    import tokenizers
    import torch
    import transformers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = transformers.ClapConfig(audio_config={"enable_fusion": True}, text_config={})
        model = transformers.ClapModel(config)
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + alphabet)}
    tokenizer = transformers.RobertaTokenizerFast(vocab=vocab, merges=[])
    model.save_pretrained(folder)
    extractor = transformers.ClapFeatureExtractor()  # 48 kHz, 10 s, fusion: laion/clap-htsat-fused's
    transformers.ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build(name: str, device: str, workdir: str):
    """(model, per-clip call, what one clip yields)"""
    from sa_train.evaluation.embedders import build_embedder, build_tagger, build_text_audio_embedder

    if name == "spectral":
        model = build_embedder("spectral")
        return model, model.embed
    if name == "openl3":
        model = build_embedder("openl3", weights="random", device=device)
        return model, model.embed
    if name == "passt":
        model = build_tagger("passt", weights="random", device=device)
        return model, model.class_probabilities
    model = build_text_audio_embedder(full_size_clap_folder(os.path.join(workdir, "clap")), device=device)
    return model, model.embed_audio


def measure(call, clips: list[np.ndarray]) -> tuple[float, float]:
    """(clips per second over clips[1:], CPU seconds per clip); clips[0] warms up."""
    call(clips[0], SR)
    wall, cpu = time.perf_counter(), time.process_time()
    for clip in clips[1:]:
        call(clip, SR)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return (len(clips) - 1) / wall, cpu / (len(clips) - 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to measure")
    parser.add_argument("--clips", type=int, default=3, help="clips timed per model (one more warms up)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each clip in seconds")
    parser.add_argument("--device", default="auto", help="torch device (auto: the GPU when there is one)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-append", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    if args.clips < 1 or args.seconds <= 0:
        parser.error("--clips must be >= 1 and --seconds > 0")
    import torch

    from sa_train.evaluation.embedders.weights import resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    clips = make_clips(args.clips + 1, args.seconds)
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            model, call = build(name, str(device), workdir)
            rate, cpu = measure(call, clips)
            results.append(f"{name} {rate:.3g} clips/s ({rate * args.seconds:.3g}x real time, CPU {cpu:.2f} s/clip)")
            print(f"{name:9s} {rate:8.3f} clips/s  {rate * args.seconds:8.2f}x real time  CPU {cpu:.2f} s/clip",
                  flush=True)
            del model, call
    load = max(load_before, os.getloadavg()[0])
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {args.threads} thread{'s' if args.threads > 1 else ''}")
    entry = (f"- {datetime.date.today().isoformat()} bench_embedders ({args.seconds:g} s stereo 44.1 kHz clips, "
             f"{args.clips} timed after 1 warm-up, real-size models on random weights, {where}; {cpu_model()}, "
             f"{os.cpu_count()} cores, load {load:.1f}): " + "; ".join(results))
    record(entry, append=not args.no_append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
