"""Per-document validation loss with and without a metadata prefix (MeCo, METHODS.md §4, §5).

The standard eval (:mod:`mixlab.eval.perplexity`) scores windows of the flat validation
stream. The MeCo modes score *documents*, so that a prefix can be put in front of each:

* ``uncond``     ``[BOS] + piece``                   (plain documents; no metadata)
* ``cond_true``  ``[BOS] + tok(own prefix) + piece``  (each document's own metadata prefix)
* ``cond_fixed`` ``[BOS] + tok(given prefix) + piece`` (one chosen prefix, e.g. steering with
  ``"URL: en.wikipedia.org\\n\\n"``)

The rule. Each validation document of domain d (EOS included) is cut into pieces of
``chunk_len = seq_len − [BOS] − meco.max_prefix_tokens`` tokens — the training rule — and
pieces are taken round-robin over the documents (piece 0 of every document in document order,
then piece 1, ...) until ``eval.max_tokens_per_domain`` piece tokens (at least one piece), so a
small cap still covers many documents and their sources. Every piece is one sequence
(right-padded in its batch; padding needs no mask under causal attention). The **same tokens
are scored in every mode**: all piece tokens when the tokenizer has a BOS, else all but each
piece's first token (which plain text cannot predict).
Prefix and BOS tokens are never scored. Hence, per domain,

    L_d(mode) = Σ_{scored tokens} CE / number of scored tokens,

with the same denominator in every mode, and ``L_d(cond_true) − L_d(uncond)`` is the
conditioning effect in nats per token. Aggregates are those of :class:`EvalResult`.
A document without metadata follows ``meco.missing_metadata`` in ``cond_true`` (with
``skip_prefix`` it is scored without a prefix there, as in ``uncond``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mixlab.errors import ConfigError
from mixlab.eval.perplexity import EvalResult, _autocast
from mixlab.mixing.budget import natural_weights
from mixlab.model.losses import IGNORE_INDEX, target_mask, token_losses
from mixlab.model.meco import (
    EVAL_MODES,
    PrefixTable,
    build_prefix_table,
    check_prefix_lengths,
    chunk_length,
    encode_texts,
    segment_layout,
)

if TYPE_CHECKING:
    from mixlab.config import MecoConfig
    from mixlab.data.store import ShardStore

logger = logging.getLogger(__name__)


class DocumentEvaluator:
    """Scores a store's validation documents under the MeCo eval modes (module docstring).

    The pieces and (for ``cond_true``) the tokenised prefixes are computed once and reused
    for every call, so evaluating during training costs only the forward passes.
    """

    def __init__(
        self,
        store: ShardStore,
        *,
        seq_len: int,
        meco: MecoConfig,
        max_tokens_per_domain: int | None,
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {batch_size}")
        self.store, self.meco, self.batch_size = store, meco, batch_size
        self.bos_id = store.bos_id
        self.chunk_len = chunk_length(seq_len, self.bos_id, meco.max_prefix_tokens)
        self.domains = tuple(store.domains)
        self.weights = natural_weights(store.train_tokens_per_domain())
        self._pieces = [self._cut(d, max_tokens_per_domain) for d in self.domains]
        self._tokenizer: Any = None
        self._true: PrefixTable | None = None

    def _cut(self, domain: str, cap: int | None) -> list[tuple[int, int, int]]:
        """(start, length, document) of the scored pieces of ``domain`` (round-robin order)."""
        offsets = np.asarray(self.store.doc_offsets(domain, "val"), dtype=np.int64)
        per_doc = [
            [
                (start, min(self.chunk_len, int(offsets[doc + 1]) - start), doc)
                for start in range(int(offsets[doc]), int(offsets[doc + 1]), self.chunk_len)
            ]
            for doc in range(len(offsets) - 1)
        ]
        pieces: list[tuple[int, int, int]] = []
        total = 0
        for rank in range(max((len(p) for p in per_doc), default=0)):
            for doc_pieces in per_doc:
                if rank >= len(doc_pieces):
                    continue
                length = doc_pieces[rank][1]
                if pieces and cap is not None and total + length > cap:
                    return pieces
                pieces.append(doc_pieces[rank])
                total += length
        return pieces

    def _tok(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self.store.tokenizer()
        return self._tokenizer

    def _prefixes(self, mode: str, fixed_prefix: str | None) -> list[list[np.ndarray]]:
        """Per domain, per piece: the prefix ids the mode puts in front of it."""
        empty = np.empty(0, dtype=np.int64)
        if mode == "uncond":
            return [[empty] * len(p) for p in self._pieces]
        if mode == "cond_fixed":
            if not fixed_prefix:
                raise ConfigError(
                    "cond_fixed needs a prefix: --prefix 'URL: en.wikipedia.org\\n\\n' "
                    "(or eval.fixed_prefix)"
                )
            (ids,) = encode_texts(self._tok(), [fixed_prefix])
            check_prefix_lengths([fixed_prefix], [ids], self.meco.max_prefix_tokens)
            return [[ids] * len(p) for p in self._pieces]
        if self._true is None:
            self._true = build_prefix_table(self.store, self.meco, self._tok(), split="val")
        table = self._true
        return [
            [table.prefix_ids(int(table.doc_prefix[d][doc])) for _, _, doc in pieces]
            for d, pieces in zip(self.domains, self._pieces, strict=True)
        ]

    def evaluate(
        self,
        model: torch.nn.Module,
        mode: str,
        *,
        fixed_prefix: str | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> EvalResult:
        """Per-domain loss of ``mode`` (``uncond`` | ``cond_true`` | ``cond_fixed``)."""
        if mode not in EVAL_MODES:
            raise ConfigError(f"eval mode {mode!r} is not one of {', '.join(EVAL_MODES)}")
        prefixes = self._prefixes(mode, fixed_prefix)
        device = next(model.parameters()).device
        loss_sum = np.zeros(len(self.domains), dtype=np.float64)
        count = np.zeros(len(self.domains), dtype=np.int64)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for k, d in enumerate(self.domains):
                    tokens = self.store.tokens(d, "val")
                    rows = [
                        segment_layout(
                            prefix,
                            np.asarray(tokens[start : start + length], dtype=np.int64),
                            bos_id=self.bos_id,
                            first_target=self.bos_id is not None,
                        )[:2]
                        for (start, length, _), prefix in zip(
                            self._pieces[k], prefixes[k], strict=True
                        )
                    ]
                    for i in range(0, len(rows), self.batch_size):
                        ids, labels = _pad(rows[i : i + self.batch_size], self.store.eos_id)
                        with _autocast(device, autocast_dtype):
                            logits = model(input_ids=ids.to(device), use_cache=False).logits
                        losses = token_losses(logits, labels.to(device))
                        loss_sum[k] += float(losses.sum(dtype=torch.float64))
                        count[k] += int(target_mask(labels).sum())
        finally:
            model.train(was_training)
        return EvalResult(self.domains, loss_sum, count, self.weights)

    def evaluate_modes(
        self,
        model: torch.nn.Module,
        modes: Sequence[str],
        *,
        fixed_prefix: str | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> dict[str, EvalResult]:
        """``{mode: EvalResult}`` for each mode, in the given order."""
        return {
            mode: self.evaluate(
                model, mode, fixed_prefix=fixed_prefix, autocast_dtype=autocast_dtype
            )
            for mode in modes
        }


def _pad(rows: list[tuple[np.ndarray, np.ndarray]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad ``(ids, labels)`` rows to one (B, L) batch; padding has label −100."""
    length = max(len(ids) for ids, _ in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    labels = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)
    for r, (row_ids, row_labels) in enumerate(rows):
        ids[r, : len(row_ids)], labels[r, : len(row_labels)] = row_ids, row_labels
    return torch.from_numpy(ids), torch.from_numpy(labels)


def conditioning_effect(results: dict[str, EvalResult]) -> dict[str, float]:
    """``L(mode) − L(uncond)`` of the natural (token-weighted) loss, for each other mode."""
    if "uncond" not in results:
        return {}
    base = results["uncond"].aggregates()["natural_loss"]
    return {
        mode: r.aggregates()["natural_loss"] - base
        for mode, r in results.items()
        if mode != "uncond"
    }
