"""Repetition-matched subsampling: a seeded subset of each domain's training documents.

Why (METHODS.md §7; arXiv 2606.07597)
    A proxy run of ``b`` tokens that is meant to predict a target run of ``B >> b`` tokens must
    repeat every domain as often as the target will. With mixture ``w`` the target repeats
    domain ``d`` ``w_d * B / N_d`` times (``N_d`` its training tokens); a proxy that sees only
    ``n_d = f * N_d`` tokens of it, ``f = b / B``, repeats it ``w_d * b / n_d`` times: the same.
    Without this, a scarce domain that the target repeats looks fresh to the proxy and the
    proxy's optimum moves toward it. ``data.subsample = f`` turns it on for any run
    (``mixlab search`` sets it on its proxies); ``data.subsample_seed`` picks the subset.

Which documents
    Document ``i`` of domain ``d`` gets the key ``h_i = splitmix64(k_d + (i + 1) * phi)``, a
    64-bit hash of ``(subsample_seed, d, i)`` (``k_d`` = blake2b of the seed and the domain
    name, ``phi`` the 64-bit golden ratio). Documents are taken in increasing key order, as
    many as brings their token count closest to ``f * N_d`` (at least one document). The order
    does not depend on ``f``, so subsets are *nested* (``f < f'`` gives a subset of ``f'``'s)
    and every run with the same seed sees the same documents whatever its mixture, model or
    training seed. Whole documents only: the subsample holds ``f * N_d`` tokens up to half a
    document.

An index, never a copy
    :class:`SubsampledStore` presents the selected documents of the ``train`` split, in store
    order, as one virtual token stream per domain (``val`` is the store's, untouched). Runs of
    consecutive selected documents are merged; :class:`SubsampledTokens` maps a slice
    ``[v, v + L)`` of the virtual stream onto store positions with a binary search over the
    runs' cumulative lengths. A slice inside one run is a view of the memory-mapped token file;
    one that crosses runs is concatenated from the few pieces it touches (a window is
    ``seq_len`` tokens). ``doc_offsets`` and ``metadata`` of the train split describe the
    selected documents, so document samplers (MeCo) see the same subset.

Accounting
    ``num_tokens`` / ``train_tokens_per_domain`` are the subsample's: the sampler's epochs and
    the policies' natural shares are relative to what the run can see. ``subsample`` (a plain
    dict) is recorded in the sampler's state, so a checkpoint never resumes on another subset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError

logger = logging.getLogger(__name__)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
SUBSAMPLED_SPLIT = "train"


def document_keys(seed: int, domain: str, n_docs: int) -> np.ndarray:
    """(n_docs,) uint64 hash of ``(seed, domain, i)`` for every document index ``i``."""
    digest = hashlib.blake2b(f"{int(seed)}\0{domain}".encode(), digest_size=8).digest()
    base = np.uint64(int.from_bytes(digest, "little"))
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design (splitmix64)
        z = base + (np.arange(1, n_docs + 1, dtype=np.uint64) * _GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def select_documents(
    lengths: np.ndarray | Sequence[int], fraction: float, *, seed: int, domain: str
) -> np.ndarray:
    """Sorted indices of the documents of the subsample (see the module docstring).

    ``lengths`` are the documents' token counts; the result holds the prefix of the hash order
    whose token count is closest to ``fraction`` of their sum (ties: the larger; at least one
    document when there is any).
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"data.subsample: must be in (0, 1], got {fraction}")
    n = np.asarray(lengths, dtype=np.int64)
    if n.size == 0:
        return np.zeros(0, dtype=np.int64)
    if fraction >= 1:
        return np.arange(n.size, dtype=np.int64)
    order = np.argsort(document_keys(seed, domain, n.size), kind="stable")
    held = np.cumsum(n[order])
    target = fraction * float(held[-1])
    k = int(np.searchsorted(held, target, side="left"))  # the first k + 1 docs reach it
    count = k if k > 0 and target - held[k - 1] < held[k] - target else k + 1
    return np.sort(order[: min(count, n.size)])


class SubsampledTokens:
    """The selected documents' tokens as one lazy 1-D stream (slices only; no copy held)."""

    def __init__(self, tokens: np.ndarray, run_starts: np.ndarray, run_lengths: np.ndarray):
        self._tokens = tokens
        self._run_starts = np.asarray(run_starts, dtype=np.int64)  # in the store's stream
        self._virtual = np.concatenate([[0], np.cumsum(run_lengths, dtype=np.int64)])
        self.dtype = tokens.dtype
        self.shape = (int(self._virtual[-1]),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("SubsampledTokens supports contiguous slices only, e.g. t[a:b]")
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise TypeError("SubsampledTokens supports contiguous slices only (step 1)")
        if stop <= start:
            return self._tokens[0:0]
        first = int(np.searchsorted(self._virtual, start, side="right")) - 1
        last = int(np.searchsorted(self._virtual, stop, side="left"))  # runs first..last-1
        offset = start - int(self._virtual[first])
        if last - first == 1:  # inside one run: a view of the memmap
            begin = int(self._run_starts[first]) + offset
            return self._tokens[begin : begin + stop - start]
        parts = []
        for r in range(first, last):
            lo = max(start, int(self._virtual[r])) - int(self._virtual[r])
            hi = min(stop, int(self._virtual[r + 1])) - int(self._virtual[r])
            base = int(self._run_starts[r])
            parts.append(self._tokens[base + lo : base + hi])
        return np.concatenate(parts)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole stream materialised (for tests and small stores; samplers slice)."""
        out = self[0 : len(self)]
        return out.astype(dtype) if dtype is not None else np.asarray(out)


class SubsampledStore:
    """A :class:`ShardStore` seen through a document subsample of its ``train`` split.

    Has what the samplers, policies and MeCo prefix tables read from a store; the ``val``
    split and everything else (tokenizer, ids, fingerprint) are the store's own.
    """

    def __init__(self, store: ShardStore, fraction: float, seed: int = 0) -> None:
        if not 0 < fraction <= 1:
            raise ConfigError(f"data.subsample: must be in (0, 1], got {fraction}")
        self.store = store
        self.fraction = float(fraction)
        self.seed = int(seed)
        self.domains: tuple[str, ...] = tuple(store.domains)
        self.fingerprint: str = store.fingerprint
        self._docs: dict[str, np.ndarray] = {}
        self._offsets: dict[str, np.ndarray] = {}
        self._runs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for d in self.domains:
            offsets = np.asarray(store.doc_offsets(d, SUBSAMPLED_SPLIT), dtype=np.int64)
            lengths = np.diff(offsets)
            docs = select_documents(lengths, self.fraction, seed=self.seed, domain=d)
            self._docs[d] = docs
            self._offsets[d] = np.concatenate([[0], np.cumsum(lengths[docs], dtype=np.int64)])
            # Runs of consecutive documents are contiguous in the token file.
            breaks = np.flatnonzero(np.diff(docs) != 1) + 1
            firsts = np.concatenate([[0], breaks]).astype(np.int64)
            lasts = np.concatenate([breaks, [docs.size]]).astype(np.int64) - 1
            starts = offsets[docs[firsts]] if docs.size else np.zeros(0, np.int64)
            ends = offsets[docs[lasts] + 1] if docs.size else np.zeros(0, np.int64)
            self._runs[d] = (starts, ends - starts)

    @property
    def subsample(self) -> dict[str, Any]:
        """What identifies the subset (kept in sampler states and checked on resume)."""
        return {"fraction": self.fraction, "seed": self.seed}

    # ------------------------------------------------------------------ store interface
    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def vocab_size(self) -> int:
        return self.store.vocab_size

    @property
    def eos_id(self) -> int:
        return self.store.eos_id

    @property
    def bos_id(self) -> int | None:
        return self.store.bos_id

    @property
    def tokenizer_hash(self) -> str:
        return self.store.tokenizer_hash

    def tokens(self, domain: str, split: str = "train") -> SubsampledTokens | np.ndarray:
        if split != SUBSAMPLED_SPLIT:
            return self.store.tokens(domain, split)
        starts, lengths = self._runs[self._known(domain)]
        return SubsampledTokens(self.store.tokens(domain, split), starts, lengths)

    def doc_offsets(self, domain: str, split: str = "train") -> np.ndarray:
        """Offsets of the selected documents in the virtual stream (``n_selected + 1``)."""
        if split != SUBSAMPLED_SPLIT:
            return self.store.doc_offsets(domain, split)
        return self._offsets[self._known(domain)]

    def metadata(self, domain: str, split: str = "train") -> list[str]:
        rows = self.store.metadata(domain, split)
        if split != SUBSAMPLED_SPLIT:
            return rows
        return [rows[i] for i in self._docs[self._known(domain)].tolist()]

    def num_tokens(self, domain: str, split: str = "train") -> int:
        if split != SUBSAMPLED_SPLIT:
            return self.store.num_tokens(domain, split)
        return int(self._offsets[self._known(domain)][-1])

    def num_docs(self, domain: str, split: str = "train") -> int:
        if split != SUBSAMPLED_SPLIT:
            return self.store.num_docs(domain, split)
        return int(self._docs[self._known(domain)].size)

    def train_tokens_per_domain(self) -> np.ndarray:
        """(K,) int64 training tokens of the subsample per domain."""
        return np.array([self.num_tokens(d) for d in self.domains], dtype=np.int64)

    def selected_documents(self, domain: str) -> np.ndarray:
        """Sorted indices (in the store's train split) of the domain's selected documents."""
        return self._docs[self._known(domain)].copy()

    def tokenizer(self) -> Tokenizer:
        return self.store.tokenizer()

    def _known(self, domain: str) -> str:
        if domain not in self._docs:
            raise ConfigError(
                f"domain {domain!r} is not in store {self.path}; its domains are "
                f"{', '.join(self.domains)}"
            )
        return domain

    # ------------------------------------------------------------------ reporting
    def summary(
        self, weights: np.ndarray | None = None, budget_tokens: float | None = None
    ) -> dict[str, dict[str, float]]:
        """Per domain: documents and tokens kept vs the store's, and (given a mixture and a
        budget) the epochs ``w_d * B / n_d`` the run will make over the subsample."""
        out: dict[str, dict[str, float]] = {}
        for i, d in enumerate(self.domains):
            full = self.store.num_tokens(d)
            kept = self.num_tokens(d)
            row = {
                "docs": float(self.num_docs(d)),
                "store_docs": float(self.store.num_docs(d)),
                "tokens": float(kept),
                "store_tokens": float(full),
                "fraction": kept / full if full else 0.0,
            }
            if weights is not None and budget_tokens is not None:
                row["epochs"] = float(weights[i]) * budget_tokens / kept if kept else 0.0
            out[d] = row
        return out

    def log_summary(self, weights: np.ndarray, budget_tokens: float) -> None:
        """One log line per domain: the subsample's size and the epochs the run implies."""
        logger.info(
            "data.subsample=%.6g (seed %d): each domain trains on a fixed subset of its "
            "documents (repetition matching, METHODS.md §7)",
            self.fraction,
            self.seed,
        )
        for d, row in self.summary(weights, budget_tokens).items():
            logger.info(
                "  %s: %d of %d documents, %d of %d tokens (%.3f); %.3g epochs at this run's "
                "%d-token budget",
                d,
                row["docs"],
                row["store_docs"],
                row["tokens"],
                row["store_tokens"],
                row["fraction"],
                row["epochs"],
                budget_tokens,
            )

    def __repr__(self) -> str:
        return f"SubsampledStore({self.store!r}, fraction={self.fraction}, seed={self.seed})"


def subsample_store(
    store: ShardStore, fraction: float, seed: int = 0
) -> ShardStore | SubsampledStore:
    """``store`` itself when ``fraction == 1``, else its :class:`SubsampledStore` view."""
    if fraction >= 1:
        return store
    return SubsampledStore(store, fraction, seed)
