"""Turn domain weights into packed training batches, reproducibly and on every rank alike.

What is computed
    Each optimiser step ``t`` (1-based, global) serves ``S = world_size * grad_accum *
    batch_size`` sequences of ``seq_len`` tokens in total. Every sequence is a *window* of one
    domain's training token stream (packed: windows cross document boundaries; documents are
    already separated by EOS in the store). Weights are token shares; since all sequences have
    the same length, ``w_i`` is also the probability that a sequence comes from domain ``i``.

The rules
    * **Domain labels** of step ``t`` come from a generator seeded by ``(seed, t)``, so every
      rank derives the same labels without communication. ``mode`` chooses how:

      - ``mixed``: each of the ``S`` sequences draws its domain i.i.d. ~ ``w``;
      - ``stratified``: domain ``i`` gets ``floor(S * w_i)`` or ``ceil(S * w_i)`` sequences,
        ``S * w_i`` on average (systematic rounding with one random offset per step), in a
        shuffled order;
      - ``homogeneous``: each of the ``M = world_size * grad_accum`` micro-batches draws one
        domain ~ ``w`` and all its sequences come from that domain (ODM / AC-ODM).

      With ``floor_per_domain = f > 0`` (AC-ODM, METHODS.md §2.1) every domain first gets ``f``
      sampling units (sequences; micro-batches in ``homogeneous`` mode) and only the other
      ``U - K f`` units follow the rule above; the units are then shuffled. The effective
      distribution is ``p_eff = (K f / U) u + (1 - K f / U) w`` (``effective_weights``).

    * **Windows.** Domain ``d``'s stream is cut into windows of ``seq_len`` tokens. Epoch ``e``
      of domain ``d`` uses a generator seeded by ``(seed, d, e)`` to draw a start offset in
      ``[0, seq_len)`` (so window boundaries move between epochs) and a random order of the
      windows. When the order is used up the next epoch draws a fresh one; an order is never
      replayed. The sequences of domain ``d`` in a step take the next windows of its stream in
      global sequence order.
    * **Ranks.** Global micro-batch ``j`` (``0 <= j < M``; sequences ``j*B .. j*B+B-1``) goes
      to rank ``j % world_size`` as its local micro-batch ``j // world_size`` (METHODS.md §0).
      Every rank advances every stream by the *global* number of windows, so sampler state is
      identical on all ranks, and each rank reads only its own windows from disk. Hence rank
      ``r``'s micro-batch ``m`` equals micro-batch ``m * world_size + r`` of a one-process
      sampler with ``grad_accum * world_size`` micro-batches and the same seed.

Accounting
    ``tokens_served`` counts global tokens per domain; ``epochs`` divides by the domain's token
    count (repetition) — the subsample's when the source is a
    :class:`~mixlab.data.subsample.SubsampledStore` (``data.subsample``); ``achieved_shares``
    vs ``requested_shares`` (token-weighted time average of the effective weights in force at
    each step, floor included) shows how close sampling noise kept us to the mixture.

State
    ``state_dict`` is plain Python (ints, floats, strings, lists): the step, current weights,
    each domain's (epoch, position) and the counters. Generators are re-derived from seeds, so
    loading a state continues bit-identically. The store fingerprint and the batch geometry are
    checked on load (:class:`~mixlab.errors.ResumeError` on mismatch). The geometry is global
    (``world_size * grad_accum`` micro-batches of ``batch_size``), so a state saved on W ranks
    loads on any W' with ``grad_accum`` adjusted to keep the product.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.mixing.base import validate_weights

logger = logging.getLogger(__name__)

MODES = ("mixed", "stratified", "homogeneous")
STATE_VERSION = 1

# Stream tags keep the label and window generators apart. They also keep the seed lists at a
# fixed length: numpy's SeedSequence treats [a, b] and [a, b, 0] as the same entropy.
_LABEL_STREAM = 0x6D69_7801
_WINDOW_STREAM = 0x6D69_7802
_ROUND_STREAM = 0x6D69_7804  # stratified mode's rounding offset per step (0x...03: documents)


class TokenArray(Protocol):
    """A domain's 1-D token stream: a memmap, an array, or a lazy view that slices to arrays
    (:class:`mixlab.data.subsample.SubsampledTokens`)."""

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice, /) -> np.ndarray: ...


class TokenSource(Protocol):
    """What the sampler needs from a store (:class:`mixlab.data.store.ShardStore` has it;
    :class:`mixlab.data.subsample.SubsampledStore` too). A source may also have a ``subsample``
    attribute (a plain dict identifying a document subset), kept in the sampler's state."""

    @property
    def domains(self) -> tuple[str, ...]: ...

    @property
    def fingerprint(self) -> str: ...

    def tokens(self, domain: str, split: str = "train") -> TokenArray: ...

    def num_tokens(self, domain: str, split: str = "train") -> int: ...


class _WindowStream:
    """One domain's shuffled, epoch-by-epoch sequence of window start positions."""

    def __init__(self, num_tokens: int, seq_len: int, seed: int, domain_index: int) -> None:
        self.num_tokens = num_tokens
        self.seq_len = seq_len
        self.seed = seed
        self.domain_index = domain_index
        self.epoch = 0
        self.position = 0  # windows of the current epoch already handed out
        self._cached_epoch = -1
        self._offset = 0
        self._order = np.empty(0, dtype=np.int64)

    def _ensure_order(self) -> None:
        if self._cached_epoch == self.epoch:
            return
        rng = np.random.default_rng([self.seed, _WINDOW_STREAM, self.domain_index, self.epoch])
        # Offsets are capped so that at least one window fits (num_tokens >= seq_len + 1).
        self._offset = int(rng.integers(0, min(self.seq_len, self.num_tokens - self.seq_len + 1)))
        n_windows = (self.num_tokens - self._offset) // self.seq_len
        self._order = rng.permutation(n_windows).astype(np.int64)
        self._cached_epoch = self.epoch

    def windows_in_epoch(self) -> int:
        self._ensure_order()
        return len(self._order)

    def take(self, count: int) -> np.ndarray:
        """Start positions of the next ``count`` windows, crossing into new epochs as needed."""
        parts = []
        while count > 0:
            self._ensure_order()
            chunk = self._order[self.position : self.position + count]
            parts.append(self._offset + chunk * self.seq_len)
            self.position += len(chunk)
            count -= len(chunk)
            if self.position == len(self._order):
                self.epoch += 1
                self.position = 0
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


class MixtureSampler:
    """Seeded, rank-aware sampler of packed single-domain windows under mixture weights.

    Args:
        store: a prepared shard store (or anything with the :class:`TokenSource` members).
        seq_len: tokens per sequence (``data.seq_len``).
        batch_size: sequences per micro-batch on this rank (``train.batch_size``).
        grad_accum: micro-batches per optimiser step on this rank (``train.grad_accum``).
        weights: (K,) token shares in ``store.domains`` order; zeros exclude a domain.
        mode: ``mixed`` | ``stratified`` | ``homogeneous`` (``mixing.sampling``).
        seed: run seed (>= 0); together with the step it fixes every draw.
        rank, world_size: this process and the number of processes.
        split: which split of the store to read.
        floor_per_domain: sampling units (sequences, or micro-batches in ``homogeneous``
            mode) every domain gets in every step before the rest is drawn ~ weights.
    """

    def __init__(
        self,
        store: TokenSource,
        *,
        seq_len: int,
        batch_size: int,
        grad_accum: int = 1,
        weights: np.ndarray | Sequence[float],
        mode: str = "mixed",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
        floor_per_domain: int = 0,
    ) -> None:
        for name, value, minimum in (
            ("data.seq_len", seq_len, 1),
            ("train.batch_size", batch_size, 1),
            ("train.grad_accum", grad_accum, 1),
            ("world_size", world_size, 1),
            ("train.seed", seed, 0),
            ("floor_per_domain", floor_per_domain, 0),
        ):
            if (
                not isinstance(value, (int, np.integer))
                or isinstance(value, bool)
                or value < minimum
            ):
                raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value!r}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside [0, world_size={world_size})")
        if mode not in MODES:
            raise ConfigError(f"mixing.sampling: unknown mode {mode!r}; choose one of {MODES}")
        self.store = store
        self.domains: tuple[str, ...] = tuple(store.domains)
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.grad_accum = int(grad_accum)
        self.mode = mode
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.split = split
        self.floor_per_domain = int(floor_per_domain)
        self.step = 0
        forced = len(store.domains) * self.floor_per_domain
        if forced > self._units_per_step:
            unit = "micro-batches" if mode == "homogeneous" else "sequences"
            raise ConfigError(
                f"floor_per_domain={self.floor_per_domain} forces {forced} {unit} per step "
                f"({len(store.domains)} domains) but a step has only {self._units_per_step}; "
                "raise train.batch_size / train.grad_accum or lower the floor"
            )
        if forced and self.rank == 0 and split == "train":
            logger.info(
                "floor_per_domain=%d: %d of the %d %s of every step go one per domain, so the "
                "mixture sampled is %.0f%% uniform + %.0f%% the policy's weights (mix/p_eff/<d>)",
                self.floor_per_domain,
                forced,
                self._units_per_step,
                "micro-batches" if mode == "homogeneous" else "sequences",
                100 * forced / self._units_per_step,
                100 * (1 - forced / self._units_per_step),
            )

        self._tokens = [store.tokens(d, split) for d in self.domains]
        self._num_tokens = np.array([store.num_tokens(d, split) for d in self.domains], np.int64)
        self.subsample: dict[str, Any] | None = getattr(store, "subsample", None)
        for name, n in zip(self.domains, self._num_tokens, strict=True):
            if n < self.seq_len + 1:
                where = "" if self.subsample is None else " in its data.subsample"
                raise DataError(
                    f"domain {name!r} has only {int(n)} {split} tokens{where}, but data.seq_len="
                    f"{self.seq_len} needs at least {self.seq_len + 1}; choose data.seq_len <= "
                    f"{max(int(n) - 1, 1)}"
                    + (" or add data to this domain" if not where else " or raise data.subsample")
                )
        self._streams = [
            _WindowStream(int(n), self.seq_len, self.seed, i)
            for i, n in enumerate(self._num_tokens)
        ]
        self._weights = validate_weights(weights, self.domains, where="sampler weights")
        self._tokens_served = np.zeros(len(self.domains), dtype=np.int64)
        self._requested_sum = np.zeros(len(self.domains), dtype=np.float64)

    # ------------------------------------------------------------------ geometry and weights
    @property
    def microbatches_per_step(self) -> int:
        """M: micro-batches per optimiser step summed over ranks."""
        return self.world_size * self.grad_accum

    @property
    def sequences_per_step(self) -> int:
        """S: sequences per optimiser step summed over ranks."""
        return self.microbatches_per_step * self.batch_size

    @property
    def tokens_per_step(self) -> int:
        """Global tokens per optimiser step (S * seq_len)."""
        return self.sequences_per_step * self.seq_len

    @property
    def _units_per_step(self) -> int:
        """U: sampling units per step (micro-batches if homogeneous, else sequences)."""
        return self.microbatches_per_step if self.mode == "homogeneous" else self.sequences_per_step

    def weights(self) -> np.ndarray:
        """The weights the next step will be drawn with (a copy)."""
        return self._weights.copy()

    def effective_weights(self) -> np.ndarray:
        """p_eff of the next step: the weights mixed with the per-domain floor's uniform share."""
        k = len(self.domains)
        forced = k * self.floor_per_domain / self._units_per_step
        return forced / k + (1.0 - forced) * self._weights

    def set_weights(self, weights: np.ndarray | Sequence[float]) -> None:
        """Use ``weights`` from the next step on; ConfigError if they are not a valid mixture."""
        self._weights = validate_weights(weights, self.domains, where="sampler weights")

    # ------------------------------------------------------------------ sampling
    def _draw_labels(self, rng: np.random.Generator) -> np.ndarray:
        """(S,) domain index of every global sequence of the step."""
        k, b = len(self.domains), self.batch_size
        forced = np.repeat(np.arange(k, dtype=np.int64), self.floor_per_domain)
        free = self._units_per_step - len(forced)
        if self.mode == "stratified":
            counts = self._stratified_counts(free) + self.floor_per_domain
            return rng.permutation(np.repeat(np.arange(k, dtype=np.int64), counts))
        cdf = np.cumsum(self._weights)
        cdf /= cdf[-1]  # exact 1.0 at the end, so u < 1 never falls past the last domain
        units = np.minimum(np.searchsorted(cdf, rng.random(free), side="right"), k - 1)
        if len(forced):
            units = rng.permutation(np.concatenate([forced, units]))
        return np.repeat(units, b) if self.mode == "homogeneous" else units

    def _stratified_counts(self, n: int) -> np.ndarray:
        """Each domain's count of the step: ``floor(n w_i)`` or ``ceil(n w_i)``, ``n`` in all,
        with expectation exactly ``n w_i`` (systematic rounding).

        The points ``u, u + 1, ..., u + n - 1`` (one offset ``u ~ U[0, 1)`` per step, from its
        own stream) are dealt to the domains by the cumulative shares ``C_i = n (w_1 + ... +
        w_i)``: domain ``i`` gets the points in ``[C_{i-1}, C_i)``. An integer ``n w_i`` is
        served exactly every step (uniform over ``K`` domains when ``K`` divides ``n``); a
        fraction is served as often as it asks, where a fixed rounding would serve the same
        ``floor`` or ``ceil`` every step and bias the shares (e.g. the first 7 of 9 domains at 2
        of 16 sequences, the other 2 at 1).
        """
        # Renormalise first (a sum of 1 + 1e-6 must still deal n points); the rounding at 1e-9
        # keeps cumulative shares that are integers exact.
        edges = np.round(np.cumsum(self._weights / self._weights.sum() * n), 9)
        edges[-1] = n
        u = np.random.default_rng([self.seed, _ROUND_STREAM, self.step + 1]).random()
        dealt = np.ceil(edges - u).astype(np.int64)  # points u + j below each C_i
        return np.diff(dealt, prepend=0)

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        """Advance one optimiser step; return this rank's ``grad_accum`` micro-batches.

        Each micro-batch is ``{"input_ids": (B, L) int64, "labels": (B, L) int64 (a copy of
        input_ids; HF models shift internally), "domain_id": (B,) int64}``.
        """
        t = self.step + 1
        rng = np.random.default_rng([self.seed, _LABEL_STREAM, t])
        labels = self._draw_labels(rng).astype(np.int64)
        starts = np.empty(len(labels), dtype=np.int64)
        counts = np.bincount(labels, minlength=len(self.domains))
        for d in np.flatnonzero(counts):
            stream = self._streams[d]
            epoch_before = stream.epoch
            starts[labels == d] = stream.take(int(counts[d]))
            if stream.epoch != epoch_before and self.rank == 0:
                logger.info(
                    "domain %r: starting epoch %d at step %d (its data repeats from now on)",
                    self.domains[d],
                    stream.epoch,
                    t,
                )
        self.step = t
        self._tokens_served += counts * self.seq_len
        self._requested_sum += self.effective_weights() * self.tokens_per_step

        b, out = self.batch_size, []
        for m in range(self.grad_accum):
            j = m * self.world_size + self.rank  # global micro-batch index
            rows = slice(j * b, (j + 1) * b)
            out.append(self._materialise(labels[rows], starts[rows]))
        return out

    def _materialise(self, labels: np.ndarray, starts: np.ndarray) -> dict[str, torch.Tensor]:
        ids = np.empty((len(labels), self.seq_len), dtype=np.int64)
        L = self.seq_len
        for i, (d, s) in enumerate(zip(labels.tolist(), starts.tolist(), strict=True)):
            ids[i] = self._tokens[d][s : s + L]  # contiguous memmap slice, cast to int64
        input_ids = torch.from_numpy(ids)
        return {
            "input_ids": input_ids,
            "labels": input_ids.clone(),
            "domain_id": torch.from_numpy(labels.copy()),
        }

    # ------------------------------------------------------------------ accounting
    def tokens_served(self) -> np.ndarray:
        """(K,) int64 tokens served per domain, summed over all ranks."""
        return self._tokens_served.copy()

    def epochs(self) -> np.ndarray:
        """(K,) tokens served / the domain's tokens in this split (1.0 = seen once)."""
        return self._tokens_served / self._num_tokens

    def achieved_shares(self) -> np.ndarray:
        """(K,) share of served tokens per domain; zeros before the first step."""
        total = self._tokens_served.sum()
        return self._tokens_served / total if total else np.zeros(len(self.domains))

    def requested_shares(self) -> np.ndarray:
        """(K,) token-weighted time average of the effective weights so far; 0 before step 1."""
        total = self._tokens_served.sum()
        return self._requested_sum / total if total else np.zeros(len(self.domains))

    def stats(self) -> dict[str, float]:
        """Namespaced scalars for ``metrics.jsonl``: tokens, epochs, achieved/requested shares."""
        out: dict[str, float] = {}
        epochs, achieved, requested = self.epochs(), self.achieved_shares(), self.requested_shares()
        for i, d in enumerate(self.domains):
            out[f"domain/{d}/tokens"] = float(self._tokens_served[i])
            out[f"domain/{d}/epochs"] = float(epochs[i])
            out[f"mix/achieved/{d}"] = float(achieved[i])
            out[f"mix/requested/{d}"] = float(requested[i])
        return out

    # ------------------------------------------------------------------ state
    def _geometry(self) -> dict[str, Any]:
        return {
            "fingerprint": self.store.fingerprint,
            "domains": list(self.domains),
            "split": self.split,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            # Global micro-batches per step: any (world_size, grad_accum) with the same product
            # continues the same data order, so a run may resume on another number of ranks.
            "microbatches_per_step": self.microbatches_per_step,
            "mode": self.mode,
            "seed": self.seed,
            "floor_per_domain": self.floor_per_domain,
            # None for the whole store (and in states written before subsampling existed).
            "subsample": self.subsample,
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state; identical on every rank (the rank itself is not stored)."""
        return {
            "version": STATE_VERSION,
            **self._geometry(),
            "step": self.step,
            "weights": self._weights.tolist(),
            "epoch": [s.epoch for s in self._streams],
            "position": [s.position for s in self._streams],
            "tokens_served": self._tokens_served.tolist(),
            "requested_sum": self._requested_sum.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; ResumeError if it belongs to another store or geometry."""
        missing = [k for k in ("version", "step", "weights", "epoch", "position") if k not in state]
        if missing:
            raise ResumeError(
                f"sampler state lacks {', '.join(missing)}; not a mixlab sampler state"
            )
        if state["version"] != STATE_VERSION:
            raise ResumeError(
                f"sampler state version {state['version']} is not supported "
                f"(this mixlab reads version {STATE_VERSION})"
            )
        for key, ours in self._geometry().items():
            theirs = state.get(key)
            if theirs != ours and key == "subsample":
                raise ResumeError(
                    f"cannot resume sampler: the checkpoint trained on data subsample "
                    f"{_describe_subsample(theirs)} but this run asks for "
                    f"{_describe_subsample(ours)}; resume with the checkpoint's data.subsample "
                    "and data.subsample_seed (or start a new run)"
                )
            if theirs != ours:
                raise ResumeError(
                    f"cannot resume sampler: checkpoint has {key}={theirs!r} but this run has "
                    f"{key}={ours!r}; resume with the same store and data/train settings"
                )
        k = len(self.domains)
        try:
            epochs = [int(e) for e in state["epoch"]]
            positions = [int(p) for p in state["position"]]
            served = np.asarray(state["tokens_served"], dtype=np.int64).reshape(k)
            requested = np.asarray(state["requested_sum"], dtype=np.float64).reshape(k)
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeError(
                f"sampler state is malformed ({exc}); the checkpoint is damaged"
            ) from exc
        if len(epochs) != k or len(positions) != k:
            raise ResumeError(f"sampler state has {len(epochs)} streams for {k} domains")
        streams = [
            _WindowStream(int(n), self.seq_len, self.seed, i)
            for i, n in enumerate(self._num_tokens)
        ]
        for stream, epoch, position in zip(streams, epochs, positions, strict=True):
            stream.epoch, stream.position = epoch, position
            if epoch < 0 or not 0 <= position < stream.windows_in_epoch():
                raise ResumeError(
                    f"sampler state (epoch {epoch}, position {position}) does not fit domain "
                    f"{self.domains[stream.domain_index]!r}; the checkpoint does not match "
                    "this store"
                )
        # Validate everything before touching self, so a failed load leaves the sampler intact.
        try:
            weights = validate_weights(state["weights"], self.domains, where="resumed weights")
        except ConfigError as exc:
            raise ResumeError(f"sampler state is damaged: {exc}") from exc
        self._streams = streams
        self._weights = weights
        self.step = int(state["step"])
        self._tokens_served = served
        self._requested_sum = requested


def _describe_subsample(subsample: Any) -> str:
    if not isinstance(subsample, dict):
        return "none (every document)"
    return f"fraction {subsample.get('fraction')} seed {subsample.get('seed')}"
