"""A PyTorch ``IterableDataset`` over a shard store whose mixture can change while iterating.

What it yields
    One training sequence at a time: ``{"input_ids": (L,) int64, "labels": (L,) int64,
    "domain_id": () int64}``. Any ``DataLoader`` (or HF ``Trainer`` / Lightning) batches them
    with its default collate function. Sequences come from :class:`MixtureSampler` exactly in
    the order of its micro-batches, so ``DataLoader(ds, batch_size=ds.batch_size)`` gives
    precisely the sampler's micro-batches (which matters for ``mode="homogeneous"``: one domain
    per micro-batch). Every ``grad_accum`` micro-batches make one sampler step.

The rule
    Weights are token shares in ``store.domains`` order. :meth:`set_weights` takes effect from
    the next sampler step that is *drawn*: a step is drawn when its first sequence is
    requested, so a consumer that prefetches (accelerate, Lightning) sees new weights one
    micro-batch later than one that does not. Nothing is ever re-drawn or dropped. A mixing
    policy drives the weights through :class:`mixlab.integrations.controller.MixingController`.

DataLoader workers
    Not supported: iterating inside a worker raises :class:`~mixlab.errors.ConfigError`. A
    worker holds a pickled *copy* of the dataset, so weights set in the main process would
    never reach it, and several workers would each replay the same stream. Use
    ``num_workers=0``: drawing a step costs about 1/1000 of training on it (``python
    benchmarks/bench_sampler.py``), so workers would gain nothing.

Iteration is a stream
    Iterating again continues where the last iterator stopped (it never restarts). With
    ``max_steps`` the stream ends after that many sampler steps; without, it is infinite.

State
    :meth:`state_dict` (``position=None``: every sequence yielded so far was consumed) returns
    plain Python that :meth:`load_state_dict` continues bit-identically. A trainer that
    prefetches passes ``position`` = sequences really trained on; steps that were already drawn
    are stored by their pre-draw sampler states and re-drawn on load with the weights they were
    drawn with, so even prefetched-but-unused sequences come back exactly.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, ResumeError
from mixlab.mixing.base import weights_from_mapping
from mixlab.mixing.budget import natural_weights
from mixlab.sampling.sampler import MixtureSampler, TokenSource

logger = logging.getLogger(__name__)

STATE_VERSION = 1
# Drawn steps remembered for state_dict(position=...): how far behind the newest drawn step a
# consumer may be. Prefetching trainers are at most one micro-batch behind.
DRAWN_HISTORY = 8

Row = dict[str, torch.Tensor]


@dataclass
class _DrawnStep:
    """One sampler step: where its rows start in the stream and how to re-draw it."""

    start: int  # stream position (sequences) of its first row
    pre_state: dict[str, Any]  # sampler state just before the draw (includes draw weights)
    rows: list[Row]


class MixtureDataset(IterableDataset[Row]):
    """Packed single-domain sequences of a shard store, drawn under changeable weights.

    Args:
        store: a prepared shard store (path or :class:`ShardStore`, or any sampler
            :class:`~mixlab.sampling.sampler.TokenSource`).
        seq_len: tokens per sequence.
        batch_size: sequences per micro-batch (set the DataLoader's batch size to it).
        grad_accum: micro-batches per optimiser step (the trainer's accumulation steps).
        weights: initial token shares: a sequence in ``store.domains`` order, a mapping
            domain -> weight, or None for natural (token-proportional) weights.
        mode: ``mixed`` | ``stratified`` | ``homogeneous`` (see :class:`MixtureSampler`).
        seed: fixes every draw.
        rank, world_size: this process among data-parallel processes.
        max_steps: stop after this many sampler steps (None: an endless stream).
        split: store split to read.
        floor_per_domain: sequences of every domain in each step (micro-batches in
            ``homogeneous``), before the weights share the rest; AC-ODM asks for 1.
    """

    def __init__(
        self,
        store: TokenSource | str | Path,
        *,
        seq_len: int,
        batch_size: int,
        grad_accum: int = 1,
        weights: Sequence[float] | np.ndarray | Mapping[str, float] | None = None,
        mode: str = "mixed",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        max_steps: int | None = None,
        split: str = "train",
        floor_per_domain: int = 0,
    ) -> None:
        super().__init__()
        self.store: TokenSource = ShardStore(store) if isinstance(store, (str, Path)) else store
        self.domains: tuple[str, ...] = tuple(self.store.domains)
        if max_steps is not None and (isinstance(max_steps, bool) or max_steps < 1):
            raise ConfigError(f"max_steps: must be None or an integer >= 1, got {max_steps!r}")
        self.max_steps = max_steps
        self.sampler = MixtureSampler(
            self.store,
            seq_len=seq_len,
            batch_size=batch_size,
            grad_accum=grad_accum,
            weights=self._resolve(weights),
            mode=mode,
            seed=seed,
            rank=rank,
            world_size=world_size,
            split=split,
            floor_per_domain=floor_per_domain,
        )
        self._drawn: deque[_DrawnStep] = deque(maxlen=DRAWN_HISTORY)
        self._position = 0  # sequences yielded so far on this rank

    # ------------------------------------------------------------------ geometry
    @property
    def seq_len(self) -> int:
        return self.sampler.seq_len

    @property
    def batch_size(self) -> int:
        return self.sampler.batch_size

    @property
    def grad_accum(self) -> int:
        return self.sampler.grad_accum

    @property
    def mode(self) -> str:
        return self.sampler.mode

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def world_size(self) -> int:
        return self.sampler.world_size

    @property
    def rows_per_step(self) -> int:
        """Sequences this rank yields per sampler step (``grad_accum * batch_size``)."""
        return self.grad_accum * self.batch_size

    @property
    def position(self) -> int:
        """Sequences yielded so far on this rank."""
        return self._position

    @property
    def steps_drawn(self) -> int:
        """Sampler steps drawn so far (a prefetching consumer may be behind it)."""
        return self.sampler.step

    # ------------------------------------------------------------------ weights
    def _resolve(
        self, weights: Sequence[float] | np.ndarray | Mapping[str, float] | None
    ) -> np.ndarray:
        if weights is None:
            return natural_weights([self.store.num_tokens(d) for d in self.domains])
        if isinstance(weights, Mapping):
            return weights_from_mapping(weights, self.domains, where="MixtureDataset weights")
        return np.asarray(weights, dtype=np.float64)

    def weights(self) -> np.ndarray:
        """The weights the next drawn step will use (a copy)."""
        return self.sampler.weights()

    def set_weights(self, weights: Sequence[float] | np.ndarray | Mapping[str, float]) -> None:
        """Draw from the next step on with ``weights`` (ConfigError if not a valid mixture)."""
        self.sampler.set_weights(self._resolve(weights))

    def stats(self) -> dict[str, float]:
        """Token accounting: tokens and epochs per domain, achieved vs requested shares."""
        return self.sampler.stats()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Row]:
        if get_worker_info() is not None:
            raise ConfigError(
                "MixtureDataset cannot run in DataLoader worker processes (num_workers > 0): "
                "each worker holds a copy of the dataset, so new weights set during training "
                "would never reach it. Use num_workers=0 (HF Trainer: "
                "dataloader_num_workers=0); sampling costs ~1/1000 of a training step"
            )
        return self._rows()

    def _rows(self) -> Iterator[Row]:
        while True:
            row = self._row_at(self._position)
            if row is None:
                return
            self._position += 1
            yield row

    def _row_at(self, position: int) -> Row | None:
        for step in self._drawn:
            if step.start <= position < step.start + len(step.rows):
                return step.rows[position - step.start]
        if self.max_steps is not None and self.sampler.step >= self.max_steps:
            return None
        self._draw()
        last = self._drawn[-1]
        assert last.start == position, (last.start, position)
        return last.rows[0]

    def _draw(self) -> None:
        last = self._drawn[-1] if self._drawn else None
        start = last.start + len(last.rows) if last is not None else self._position
        pre_state = self.sampler.state_dict()
        rows = [
            {"input_ids": mb["input_ids"][i], "labels": mb["labels"][i], "domain_id": mb_id}
            for mb in self.sampler.next_step()
            for i, mb_id in enumerate(mb["domain_id"].unbind())
        ]
        self._drawn.append(_DrawnStep(start, pre_state, rows))

    # ------------------------------------------------------------------ state
    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Plain-Python state that resumes at sequence ``position`` (default: all yielded).

        ``position`` may lag the sequences yielded (prefetch) by at most the steps kept in
        memory (:data:`DRAWN_HISTORY`); every step drawn after it is saved for re-drawing.
        """
        position = self._position if position is None else int(position)
        if not 0 <= position <= self._position:
            raise ValueError(f"position {position} is outside [0, {self._position}] (yielded)")
        pending = [s for s in self._drawn if s.start + len(s.rows) > position]
        if pending and pending[0].start > position:
            raise ValueError(f"position {position} is older than the drawn steps kept")
        return {
            "version": STATE_VERSION,
            "position": position,
            "sampler": self.sampler.state_dict(),
            "redraw": [s.pre_state for s in pending],
            "redraw_start": pending[0].start if pending else position,
            "weights": self.sampler.weights().tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (ResumeError if it belongs to another store or geometry)."""
        try:
            version, position = state["version"], int(state["position"])
            redraw, start = list(state["redraw"]), int(state["redraw_start"])
            sampler_state, weights = state["sampler"], state["weights"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeError(f"MixtureDataset state is malformed ({exc!r})") from exc
        if version != STATE_VERSION:
            raise ResumeError(
                f"MixtureDataset state version {version} is not supported "
                f"(this mixlab reads version {STATE_VERSION})"
            )
        self._drawn.clear()
        self.sampler.load_state_dict(sampler_state)
        self._position = start
        for pre_state in redraw:  # each step re-drawn with the weights it was drawn with
            self.sampler.load_state_dict(pre_state)
            self._draw()
        self.sampler.set_weights(weights)
        self._position = position
