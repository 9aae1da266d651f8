"""Counting bad files per reason, surfacing the counts as metrics, and stopping on a broken corpus.

Decoding never raises for bad input; each :class:`~sa_train.data.decode.BadFile` is counted here.
In a Ray Data pipeline the decode tasks of every worker add their counts to one shared tally, a
Ray actor wrapping :class:`BadFileCounter` (see :func:`create_bad_file_tally`). The trainer reads
it for metrics and for the limit::

    tally = create_bad_file_tally()                      # on the driver
    ds = build_audio_dataset(cfg.data, seed, tally=tally)
    ...                                                   # in a worker, every N steps:
    counter = ray.get(tally.snapshot.remote())
    metrics.update(counter.metrics())                     # data/bad_fraction, data/bad/<reason>
    counter.check(cfg.data.max_bad_fraction)              # raises BadDataError above the limit

The decode tasks also check the shared tally themselves, so a pipeline over a broken corpus
fails with :class:`BadDataError` even if the trainer never looks.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from sa_train.data.decode import BadFile

logger = logging.getLogger(__name__)

# Paths kept (and logged) per reason: enough to find the problem, bounded for 800k-file corpora.
EXAMPLES_PER_REASON = 5
# A fraction measured over fewer files than this is too noisy to stop training on, unless the
# whole corpus is smaller.
MIN_FILES_FOR_LIMIT = 200


class BadDataError(ValueError):
    """Too many bad files: the message names the worst reasons with example paths."""


@dataclass
class BadFileCounter:
    """Files seen and bad files per reason, with the first few bad files of each reason.

    ``seen`` counts every decode attempt (good or bad), so ``bad_fraction`` is bad attempts over
    attempts; over several epochs a bad file counts once per epoch, as does a good one. With
    ``log_examples`` the first few bad files of each reason are logged when they are first added
    (the per-batch counters of decode tasks leave that to the shared tally they merge into).
    """

    seen: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[BadFile]] = field(default_factory=dict)
    log_examples: bool = True

    @property
    def bad(self) -> int:
        return sum(self.counts.values())

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def add_good(self, n: int = 1) -> None:
        self.seen += n

    def add_bad(self, bad: BadFile) -> None:
        self.seen += 1
        self.counts[bad.reason] += 1
        self._keep_example(bad)

    def _keep_example(self, bad: BadFile) -> None:
        kept = self.examples.setdefault(bad.reason, [])
        if len(kept) < EXAMPLES_PER_REASON and all(k.path != bad.path for k in kept):
            kept.append(bad)
            if self.log_examples:
                logger.warning("skipping bad audio file %s (%s): %s", bad.path, bad.reason, bad.detail)

    def example_paths(self) -> dict[str, list[str]]:
        return {reason: [b.path for b in kept] for reason, kept in self.examples.items()}

    def merge(self, other: "BadFileCounter") -> "BadFileCounter":
        """Add another counter's counts into this one; returns self."""
        self.seen += other.seen
        self.counts.update(other.counts)
        for kept in other.examples.values():
            for bad in kept:
                self._keep_example(bad)
        return self

    def metrics(self, prefix: str = "data/") -> dict[str, float]:
        """Flat metrics: ``data/files_seen``, ``data/bad_files``, ``data/bad_fraction``, ``data/bad/<reason>``."""
        out = {f"{prefix}files_seen": float(self.seen), f"{prefix}bad_files": float(self.bad)}
        out[f"{prefix}bad_fraction"] = self.bad_fraction
        out.update({f"{prefix}bad/{reason}": float(n) for reason, n in sorted(self.counts.items())})
        return out

    def check(self, max_fraction: float, min_files: int = 0) -> None:
        """:func:`check_bad_fraction` over this counter."""
        check_bad_fraction(self.counts, self.seen, max_fraction, self.example_paths(), min_files=min_files)

    # Actor-friendly spellings (see create_bad_file_tally).
    def add(self, other: "BadFileCounter", max_fraction: Optional[float] = None, min_files: int = 0) -> bool:
        """Merge ``other``; return whether the total is now over ``max_fraction`` (False if None)."""
        self.merge(other)
        return max_fraction is not None and self.seen >= min_files and self.bad_fraction > max_fraction

    def snapshot(self) -> "BadFileCounter":
        return self


def check_bad_fraction(
    counts: Mapping[str, int],
    total: int,
    max_fraction: float,
    examples: Optional[Mapping[str, Iterable[str]]] = None,
    *,
    min_files: int = 0,
) -> None:
    """Raise :class:`BadDataError` when ``sum(counts) / total > max_fraction``.

    Args:
        counts: bad files per reason.
        total: files seen, good and bad.
        max_fraction: the limit, ``data.max_bad_fraction``.
        examples: example paths per reason, quoted in the error.
        min_files: do not judge before this many files were seen (small samples are noisy).
    """
    bad = sum(counts.values())
    if total <= 0 or total < min_files or bad / total <= max_fraction:
        return
    worst = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    lines = []
    for reason, n in worst[:5]:
        paths = list((examples or {}).get(reason, []))[:3]
        lines.append(f"  {reason}: {n} files" + (f", e.g. {', '.join(paths)}" if paths else ""))
    raise BadDataError(
        f"{bad} of {total} audio files ({bad / total:.1%}) are bad, above data.max_bad_fraction="
        f"{max_fraction:g}; worst reasons:\n" + "\n".join(lines) + "\n"
        "Run `sa-train data check` on the sources to list every bad file and write a clean manifest, "
        "or raise data.max_bad_fraction."
    )


def counter_from(results: Iterable[Any]) -> BadFileCounter:
    """Count an iterable of decode results (examples and :class:`BadFile`)."""
    counter = BadFileCounter()
    for result in results:
        if isinstance(result, BadFile):
            counter.add_bad(result)
        else:
            counter.add_good()
    return counter


def create_bad_file_tally(name: Optional[str] = None, namespace: Optional[str] = None):
    """A Ray actor holding one :class:`BadFileCounter` for a whole pipeline.

    With ``name`` the actor can be found from any worker with ``ray.get_actor(name, namespace)``;
    ``get_if_exists`` makes a restarted driver reuse the tally of its run.
    """
    import ray

    actor_cls = ray.remote(num_cpus=0)(BadFileCounter)
    if name is None:
        return actor_cls.remote()
    return actor_cls.options(name=name, namespace=namespace, get_if_exists=True).remote()
