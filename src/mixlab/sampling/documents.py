"""Document-aware packed batches for MeCo: each document keeps its boundaries (and its prefix).

:class:`DocumentSampler` is a :class:`~mixlab.sampling.sampler.MixtureSampler` whose sequences
are built from whole documents instead of windows of the flat stream. Everything that decides
*which domain* a sequence comes from is inherited unchanged: the step's domain labels are drawn
by ``_draw_labels`` from a generator seeded by ``(seed, step)`` under the current weights
(``mixed`` / ``stratified`` / ``homogeneous``), global micro-batch ``j`` goes to rank
``j % world_size``, and every rank advances every stream by the global amount.

Pieces
    Documents (``doc_offsets``; each ends with EOS) are cut into pieces of at most
    ``chunk_len`` tokens, with ``chunk_len = seq_len − [BOS] − meco.max_prefix_tokens`` so any
    piece with its BOS and prefix fits one sequence. Epoch ``e`` of domain ``d`` visits the
    pieces in a random order seeded by ``(seed, d, e)``; a new epoch draws a fresh order.

Filling a sequence of domain ``d`` (``fill``)
    Take the head piece of ``d``'s stream, lay it out as ``[BOS] + prefix + piece``
    (:func:`mixlab.model.meco.segment_layout`; the prefix only while conditioning, i.e. global
    step ``t <= condition_steps``) and repeat while room is left. ``split`` (default) cuts the
    head piece at the end of the sequence and continues it, with its prefix again, in the next
    sequence of that domain: no position is wasted except where even BOS + prefix + one token no
    longer fits. ``complete`` (the MeCo release) starts a new sequence when the head piece
    does not fit. ``packing=pad`` puts one piece per sequence. Positions left over are padded
    (pad id = EOS, label −100).

Model inputs (``packing``)
    ``doc_masked`` batches carry ``segment_ids`` and ``position_ids`` (restarting at every
    piece; padding is its own segment) that :func:`mixlab.model.meco.model_inputs` turns into
    a block-diagonal causal mask. ``pad`` and ``concat`` batches are plain causal sequences
    (right padding needs no mask: no real token attends to a later position).

Token accounting
    Only *loss-bearing* tokens (labels != −100: document tokens and EOS, never BOS or metadata)
    count toward the mixture shares: ``tokens_served`` / ``achieved_shares`` use them and
    ``requested_shares`` weighs each step's weights by its loss tokens. Domain labels are still
    drawn per sequence, so a domain whose sequences carry more padding or prefix per sequence
    gets fewer loss tokens than its weight; ``achieved_shares`` vs ``requested_shares`` shows
    it. ``epochs`` counts document tokens served (masked first tokens included).
    :meth:`totals` gives the running global numbers of positions, context (non-padding)
    tokens, loss tokens, metadata tokens and padding.

State
    The parent's state plus a ``documents`` part: each domain's (epoch, position, offset into
    the head piece), the document-token counters and the totals. Geometry (packing, fill,
    chunk length, condition_steps, prefix fingerprint) is checked on load.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.model.losses import IGNORE_INDEX
from mixlab.model.meco import (
    FILLS,
    PACKINGS,
    PrefixTable,
    build_prefix_table,
    chunk_length,
    condition_steps,
    resolve_packing,
    segment_layout,
)
from mixlab.sampling.sampler import _LABEL_STREAM, MixtureSampler, TokenSource

if TYPE_CHECKING:
    from mixlab.config import RunConfig
    from mixlab.data.store import ShardStore
    from mixlab.data.subsample import SubsampledStore

logger = logging.getLogger(__name__)

_PIECE_STREAM = 0x6D69_7803
_TOTAL_KEYS = (
    "positions",
    "context_tokens",
    "loss_tokens",
    "metadata_tokens",
    "pad_tokens",
    "documents",
)


class DocumentSource(TokenSource, Protocol):
    """A :class:`TokenSource` that also knows its document boundaries."""

    def doc_offsets(self, domain: str, split: str = "train") -> np.ndarray: ...


@dataclass(frozen=True)
class _Segment:
    """One packed piece (or part of one): ``take`` tokens from ``start`` after a prefix."""

    start: int
    take: int
    prefix: int  # index into the PrefixTable, -1 = none


class _PieceStream:
    """One domain's pieces in a shuffled order per epoch, with an offset into the head piece."""

    def __init__(self, num_pieces: int, seed: int, domain_index: int) -> None:
        self.num_pieces = num_pieces
        self.seed = seed
        self.domain_index = domain_index
        self.epoch = 0
        self.position = 0  # pieces of the current epoch fully served
        self.offset = 0  # tokens of the head piece already served (fill=split)
        self._cached_epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    def head(self) -> int:
        if self._cached_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, _PIECE_STREAM, self.domain_index, self.epoch])
            self._order = rng.permutation(self.num_pieces).astype(np.int64)
            self._cached_epoch = self.epoch
        return int(self._order[self.position])

    def advance(self, tokens: int, piece_len: int) -> None:
        self.offset += tokens
        if self.offset >= piece_len:
            self.offset = 0
            self.position += 1
            if self.position == self.num_pieces:
                self.epoch, self.position = self.epoch + 1, 0


class DocumentSampler(MixtureSampler):
    """Seeded, rank-aware sampler of packed *documents* (MeCo; see the module docstring).

    Args (besides :class:`MixtureSampler`'s):
        prefixes: the split's :class:`~mixlab.model.meco.PrefixTable`; None = never a prefix.
        condition_steps: s_c; steps ``t <= s_c`` get prefixes, later steps plain documents.
        chunk_len: maximum tokens of a document piece (:func:`~mixlab.model.meco.chunk_length`).
        packing: ``doc_masked`` | ``pad`` | ``concat``;  fill: ``split`` | ``complete``.
        mask_metadata: labels −100 on prefix tokens (False = train on them; an ablation).
        bos_id: prepended to every piece when not None (default: the store's ``bos_id``).
        pad_id: id of padding positions (default: the store's ``eos_id``).
    """

    def __init__(
        self,
        store: DocumentSource,
        *,
        prefixes: PrefixTable | None,
        condition_steps: int,
        chunk_len: int,
        packing: str = "doc_masked",
        fill: str = "split",
        mask_metadata: bool = True,
        bos_id: int | None = None,
        pad_id: int | None = None,
        **kwargs: Any,
    ) -> None:
        if packing not in PACKINGS:
            raise ConfigError(f"meco.packing: {packing!r} is not one of {', '.join(PACKINGS)}")
        if fill not in FILLS:
            raise ConfigError(f"meco.fill: {fill!r} is not one of {', '.join(FILLS)}")
        super().__init__(store, **kwargs)
        self.prefixes = prefixes
        self.condition_steps = int(condition_steps)
        self.chunk_len = int(chunk_len)
        self.packing, self.fill, self.mask_metadata = packing, fill, bool(mask_metadata)
        self.bos_id = getattr(store, "bos_id", None) if bos_id is None else bos_id
        self.pad_id = int(getattr(store, "eos_id", 0) if pad_id is None else pad_id)
        n_bos = int(self.bos_id is not None)
        lengths = prefixes.lengths() if prefixes is not None else np.zeros(0, np.int64)
        self._prefix_len = lengths
        longest = int(lengths.max(initial=0))
        if not 1 <= self.chunk_len <= self.seq_len - n_bos - longest:
            raise ConfigError(
                f"chunk_len={self.chunk_len}: BOS ({n_bos}) + the longest prefix ({longest}) + "
                f"a piece must fit data.seq_len={self.seq_len}"
            )
        self._doc_store = store
        # Per domain: (start, length, document index) of every piece.
        self._pieces = [self._cut_pieces(d) for d in self.domains]
        self._piece_streams = self._new_piece_streams()
        self._doc_tokens_served = np.zeros(len(self.domains), dtype=np.int64)
        self._totals = dict.fromkeys(_TOTAL_KEYS, 0)

    @classmethod
    def from_config(
        cls,
        cfg: RunConfig,
        store: ShardStore | SubsampledStore,
        model: torch.nn.Module,
        **kwargs: Any,
    ) -> DocumentSampler:
        """The sampler of a ``meco.enabled`` run: prefixes, s_c, chunking and packing from cfg.

        ``kwargs`` are :class:`MixtureSampler`'s (seq_len, batch_size, weights, mode, ...).
        ``doc_masked`` is checked against ``model`` and falls back to ``pad`` if unsupported.
        """
        mc = cfg.meco
        s_c = condition_steps(cfg.train.max_steps, mc.cooldown_fraction)
        prefixes = build_prefix_table(store, mc, store.tokenizer()) if s_c > 0 else None
        sampler = cls(
            store,
            prefixes=prefixes,
            condition_steps=s_c,
            chunk_len=chunk_length(cfg.data.seq_len, store.bos_id, mc.max_prefix_tokens),
            packing=resolve_packing(mc.packing, model),
            fill=mc.fill,
            mask_metadata=mc.mask_metadata,
            **kwargs,
        )
        logger.info(
            "meco: %s prefixes for steps 1..%d of %d, then plain documents (packing %s, fill "
            "%s, pieces of <= %d tokens)",
            mc.metadata_variant if s_c else "no",
            s_c,
            cfg.train.max_steps,
            sampler.packing,
            sampler.fill,
            sampler.chunk_len,
        )
        return sampler

    def _new_piece_streams(self) -> list[_PieceStream]:
        return [_PieceStream(len(p[0]), self.seed, i) for i, p in enumerate(self._pieces)]

    def _cut_pieces(self, domain: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, length, document index) of every piece of ``domain``."""
        offsets = np.asarray(self._doc_store.doc_offsets(domain, self.split), dtype=np.int64)
        lengths = np.diff(offsets)
        n_docs = len(lengths)
        if self.prefixes is not None and len(self.prefixes.doc_prefix[domain]) != n_docs:
            raise DataError(
                f"domain {domain!r}: {len(self.prefixes.doc_prefix[domain])} metadata rows for "
                f"{n_docs} documents; the store is damaged — re-run prepare"
            )
        chunks = -(-lengths // self.chunk_len)
        doc = np.repeat(np.arange(n_docs, dtype=np.int64), chunks)
        first = np.repeat(np.cumsum(chunks) - chunks, chunks)
        start = offsets[doc] + (np.arange(len(doc)) - first) * self.chunk_len
        length = np.minimum(self.chunk_len, offsets[doc + 1] - start)
        return start, length, doc

    # ------------------------------------------------------------------ packing
    def conditioning(self, step: int) -> bool:
        """Whether global step ``step`` (1-based) is in the conditioning phase."""
        return self.prefixes is not None and step <= self.condition_steps

    def _plan_row(self, d: int, conditioning: bool) -> list[_Segment]:
        """The segments of one sequence of domain ``d``; advances the domain's stream."""
        stream, (starts, lengths, docs) = self._piece_streams[d], self._pieces[d]
        n_bos = int(self.bos_id is not None)
        remaining = self.seq_len
        row: list[_Segment] = []
        while remaining > 0:
            piece = stream.head()
            prefix = -1
            if conditioning:
                assert self.prefixes is not None
                prefix = int(self.prefixes.doc_prefix[self.domains[d]][docs[piece]])
            overhead = n_bos + (int(self._prefix_len[prefix]) if prefix >= 0 else 0)
            avail = int(lengths[piece]) - stream.offset
            room = remaining - overhead
            if self.packing == "pad" and row:
                break
            if self.fill == "split" and self.packing != "pad":
                take = max(0, min(avail, room))
            else:
                take = avail if avail <= room else 0
            min_take = 1 if overhead else 2  # without BOS/prefix the first token is no target
            if take == 0 or (row and take < min_take):
                break
            row.append(_Segment(int(starts[piece]) + stream.offset, take, prefix))
            stream.advance(take, int(lengths[piece]))
            remaining -= overhead + take
        assert row, "a piece always fits an empty sequence"
        return row

    def _row_counts(self, row: list[_Segment]) -> dict[str, int]:
        """Positions, context/loss/metadata/pad tokens of one planned sequence."""
        n_bos = int(self.bos_id is not None)
        context = metadata = loss = 0
        for seg in row:
            n_prefix = int(self._prefix_len[seg.prefix]) if seg.prefix >= 0 else 0
            context += n_bos + n_prefix + seg.take
            metadata += n_prefix
            loss += seg.take - int(n_bos + n_prefix == 0)
            if not self.mask_metadata:
                loss += n_prefix - int(n_bos == 0 and n_prefix > 0)
        return {
            "positions": self.seq_len,
            "context_tokens": context,
            "loss_tokens": loss,
            "metadata_tokens": metadata,
            "pad_tokens": self.seq_len - context,
            "documents": len(row),
        }

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        """Advance one optimiser step; return this rank's ``grad_accum`` micro-batches.

        Each micro-batch has ``input_ids``, ``labels`` (−100 on BOS, prefix and padding),
        ``domain_id``, and for ``doc_masked`` also ``segment_ids`` and ``position_ids``.
        """
        t = self.step + 1
        labels = self._draw_labels(np.random.default_rng([self.seed, _LABEL_STREAM, t]))
        labels = labels.astype(np.int64)
        conditioning = self.conditioning(t)
        epochs_before = [s.epoch for s in self._piece_streams]
        plans = [self._plan_row(int(d), conditioning) for d in labels]
        loss = np.zeros(len(self.domains), dtype=np.int64)
        for d, row in zip(labels.tolist(), plans, strict=True):
            counts = self._row_counts(row)
            loss[d] += counts["loss_tokens"]
            self._doc_tokens_served[d] += sum(seg.take for seg in row)
            for key, value in counts.items():
                self._totals[key] += value
        for d, stream in enumerate(self._piece_streams):
            if stream.epoch != epochs_before[d] and self.rank == 0:
                logger.info(
                    "domain %r: starting document epoch %d at step %d (its data repeats from "
                    "now on)",
                    self.domains[d],
                    stream.epoch,
                    t,
                )
        self.step = t
        self._tokens_served += loss
        self._requested_sum += self.effective_weights() * int(loss.sum())

        b, out = self.batch_size, []
        for m in range(self.grad_accum):
            j = m * self.world_size + self.rank  # global micro-batch index
            rows = slice(j * b, (j + 1) * b)
            out.append(self._materialise_rows(labels[rows], plans[rows]))
        return out

    def _materialise_rows(
        self, domains: np.ndarray, plans: list[list[_Segment]]
    ) -> dict[str, torch.Tensor]:
        n, L = len(plans), self.seq_len
        ids = np.full((n, L), self.pad_id, dtype=np.int64)
        labels = np.full((n, L), IGNORE_INDEX, dtype=np.int64)
        segment = np.zeros((n, L), dtype=np.int64)
        position = np.zeros((n, L), dtype=np.int64)
        for r, (d, row) in enumerate(zip(domains.tolist(), plans, strict=True)):
            c = 0
            for k, seg in enumerate(row):
                prefix = (
                    self.prefixes.prefix_ids(seg.prefix)
                    if self.prefixes is not None
                    else np.empty(0, np.int64)
                )
                doc = np.asarray(self._tokens[d][seg.start : seg.start + seg.take], np.int64)
                seg_ids, seg_labels, _ = segment_layout(
                    prefix, doc, bos_id=self.bos_id, mask_metadata=self.mask_metadata
                )
                e = c + len(seg_ids)
                ids[r, c:e], labels[r, c:e] = seg_ids, seg_labels
                segment[r, c:e], position[r, c:e] = k, np.arange(e - c)
                c = e
            segment[r, c:], position[r, c:] = len(row), np.arange(L - c)  # padding: own segment
        batch = {
            "input_ids": torch.from_numpy(ids),
            "labels": torch.from_numpy(labels),
            "domain_id": torch.from_numpy(domains.copy()),
        }
        if self.packing == "doc_masked":
            batch["segment_ids"] = torch.from_numpy(segment)
            batch["position_ids"] = torch.from_numpy(position)
        return batch

    # ------------------------------------------------------------------ accounting
    def epochs(self) -> np.ndarray:
        """(K,) document tokens served / the domain's tokens in this split."""
        return self._doc_tokens_served / self._num_tokens

    def totals(self) -> dict[str, int]:
        """Running global counts: positions, context, loss, metadata and pad tokens, pieces."""
        return dict(self._totals)

    # ------------------------------------------------------------------ state
    def _geometry(self) -> dict[str, Any]:
        return {
            **super()._geometry(),
            "kind": "documents",
            "packing": self.packing,
            "fill": self.fill,
            "chunk_len": self.chunk_len,
            "condition_steps": self.condition_steps,
            "mask_metadata": self.mask_metadata,
            "bos_id": self.bos_id,
            "prefixes": self.prefixes.fingerprint() if self.prefixes is not None else None,
        }

    def state_dict(self) -> dict[str, Any]:
        """The parent's state (its window positions stay unused) plus the document streams."""
        return {
            **super().state_dict(),
            "documents": {
                "epoch": [s.epoch for s in self._piece_streams],
                "position": [s.position for s in self._piece_streams],
                "offset": [s.offset for s in self._piece_streams],
                "doc_tokens_served": self._doc_tokens_served.tolist(),
                "totals": dict(self._totals),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; ResumeError for another store, geometry or a window state."""
        part = state.get("documents")
        if state.get("kind") != "documents" or not isinstance(part, dict):
            raise ResumeError(
                "the checkpoint's sampler served plain windows (meco off) but this run packs "
                "documents (meco.enabled=true); resume with the checkpoint's own config"
            )
        k = len(self.domains)
        try:
            rows = [[int(x) for x in part[key]] for key in ("epoch", "position", "offset")]
            served = np.asarray(part["doc_tokens_served"], dtype=np.int64).reshape(k)
            totals = {key: int(part["totals"][key]) for key in _TOTAL_KEYS}
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeError(f"sampler document state is malformed ({exc})") from exc
        if any(len(r) != k for r in rows):
            raise ResumeError(f"sampler document state does not have {k} streams")
        streams = self._new_piece_streams()
        for d, (stream, epoch, position, offset) in enumerate(zip(streams, *rows, strict=True)):
            stream.epoch, stream.position, stream.offset = epoch, position, offset
            ok = epoch >= 0 and 0 <= position < stream.num_pieces
            if not ok or not 0 <= offset < int(self._pieces[d][1][stream.head()]):
                raise ResumeError(
                    f"sampler document state (epoch {epoch}, piece {position}, offset {offset}) "
                    f"does not fit domain {self.domains[d]!r}; the checkpoint does not match "
                    "this store"
                )
        super().load_state_dict(state)  # checks geometry first; raises before changing self
        self._piece_streams = streams
        self._doc_tokens_served = served
        self._totals = totals
