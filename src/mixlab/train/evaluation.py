"""The run's validation pass: per-domain perplexity, plus MeCo's per-document eval modes.

Every ``train.eval_every`` steps and at the end the loop scores the fixed validation windows
of every domain (:func:`mixlab.eval.perplexity.evaluate`, METHODS.md §5 aggregates) and, with
``eval.document_modes``, the same documents with and without metadata prefixes
(:class:`mixlab.eval.conditional.DocumentEvaluator`, logged as ``eval_<mode>/...``).
"""

from __future__ import annotations

from typing import Any

import torch

from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.eval.perplexity import EvalResult, evaluate, validation_windows


def eval_record(result: EvalResult, step: int) -> dict[str, Any]:
    """Flat ``eval/...`` metrics of one validation pass (METHODS.md §5 aggregates)."""
    return {"step": step, **result.to_metrics()}


class RunEvaluator:
    """Validation of one run's model; the document evaluator is built at its first use."""

    def __init__(self, cfg: RunConfig, store: ShardStore, autocast_dtype: torch.dtype | None):
        self.cfg = cfg
        self.store = store
        self.autocast_dtype = autocast_dtype
        self._documents: Any = None  # mixlab.eval.conditional.DocumentEvaluator
        self.check()

    def check(self) -> None:
        """Fail now, before step 1, on what would fail at the first evaluation."""
        for d in self.store.domains:  # DataError for a validation split too short to score
            validation_windows(
                self.store.tokens(d, "val"),
                seq_len=self.cfg.data.seq_len,
                max_tokens=self.cfg.eval.max_tokens_per_domain,
                domain=d,
            )
        if self.cfg.eval.document_modes:
            self._document_evaluator()

    def __call__(self, model: torch.nn.Module, step: int) -> tuple[EvalResult, dict[str, Any]]:
        """The result and its flat record (``eval/...`` and ``eval_<mode>/...``)."""
        ev = self.cfg.eval
        result = evaluate(
            model,
            self.store,
            seq_len=self.cfg.data.seq_len,
            batch_size=ev.batch_size,
            max_tokens_per_domain=ev.max_tokens_per_domain,
            autocast_dtype=self.autocast_dtype,
        )
        return result, {**eval_record(result, step), **self.document_modes(model)}

    def document_modes(self, model: torch.nn.Module) -> dict[str, float]:
        """``eval_<mode>/...`` metrics of the ``eval.document_modes`` ({} without any)."""
        ev = self.cfg.eval
        if not ev.document_modes:
            return {}
        results = self._document_evaluator().evaluate_modes(
            model,
            ev.document_modes,
            fixed_prefix=ev.fixed_prefix,
            autocast_dtype=self.autocast_dtype,
        )
        out: dict[str, float] = {}
        for mode, res in results.items():
            out.update(res.to_metrics(prefix=f"eval_{mode}"))
        return out

    def _document_evaluator(self) -> Any:
        if self._documents is None:
            from mixlab.eval.conditional import DocumentEvaluator

            ev = self.cfg.eval
            self._documents = DocumentEvaluator(
                self.store,
                seq_len=self.cfg.data.seq_len,
                meco=self.cfg.meco,
                max_tokens_per_domain=ev.max_tokens_per_domain,
                batch_size=ev.batch_size,
            )
        return self._documents
