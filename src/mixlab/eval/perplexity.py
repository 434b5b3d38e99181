"""Per-domain validation loss and perplexity (METHODS.md §5).

For every domain d, the validation split ``store.tokens(d, "val")`` is cut into consecutive,
non-overlapping windows of ``seq_len`` tokens starting at token 0, so the same tokens are scored
in every run and at every eval:

* full windows only — the last partial window is dropped, unless the split is shorter than
  ``seq_len``; then the one window is the whole split (a split of < 2 tokens has nothing to
  predict and raises :class:`~mixlab.errors.DataError`);
* at most ``max_tokens_per_domain // seq_len`` windows (``None`` = the whole split), taken
  from the start, so a cap keeps the eval set a prefix of the full one.

Each window of n tokens gives n − 1 predictions (the first token has no context), and

    L_d = Σ token losses / number of predicted tokens      (token-weighted within the domain)
    PPL_d = exp(L_d)

The model runs in eval mode under ``torch.no_grad`` (train mode is restored afterwards),
optionally under ``torch.autocast`` with ``autocast_dtype``; the loss itself is always fp32.
Memory per batch is dominated by the logits: ``batch_size · seq_len · vocab · 4`` bytes.

The store is duck-typed (:class:`ValidationSource`): anything with ``domains``,
``tokens(domain, split)`` and ``train_tokens_per_domain()`` — a :class:`ShardStore` or a test fake.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from mixlab.errors import ConfigError, DataError
from mixlab.eval.metrics import aggregates, safe_exp, worst_domain
from mixlab.mixing.budget import natural_weights
from mixlab.model.losses import token_losses
from mixlab.tables import text_table

logger = logging.getLogger(__name__)


class ValidationSource(Protocol):
    """The part of the ShardStore contract evaluation needs."""

    @property
    def domains(self) -> tuple[str, ...]: ...
    def tokens(self, domain: str, split: str = "train") -> np.ndarray: ...
    def train_tokens_per_domain(self) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Loss sums and predicted-token counts per domain, plus the natural weights for aggregates.

    Attributes:
        domains: domain names in canonical order.
        loss_sum: (K,) float64 sum of token losses (nats) per domain.
        token_count: (K,) int64 number of predicted tokens per domain.
        natural_weights: (K,) float64 natural token shares of the training data.
    """

    domains: tuple[str, ...]
    loss_sum: np.ndarray
    token_count: np.ndarray
    natural_weights: np.ndarray

    def losses(self) -> np.ndarray:
        """(K,) token-mean loss L_d per domain (nats/token)."""
        return np.asarray(self.loss_sum, np.float64) / np.asarray(self.token_count, np.float64)

    def ppl(self) -> np.ndarray:
        """(K,) perplexity exp(L_d) per domain."""
        return np.array([safe_exp(float(x)) for x in self.losses()])

    def domain_losses(self) -> dict[str, float]:
        """Domain name -> L_d."""
        return dict(zip(self.domains, (float(x) for x in self.losses()), strict=True))

    def aggregates(self) -> dict[str, float]:
        """``mean_ppl``, ``geo_ppl``, ``natural_ppl``, ... (see :mod:`mixlab.eval.metrics`)."""
        return aggregates(self.losses(), self.natural_weights, domains=self.domains)

    def worst_domain(self) -> str:
        """Name of the domain with the highest validation loss."""
        return worst_domain(self.losses(), domains=self.domains)

    def to_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat namespaced metrics: ``eval/<d>/loss``, ``eval/<d>/ppl``, ``eval/mean_ppl``, ..."""
        out: dict[str, float] = {}
        for d, loss, ppl in zip(self.domains, self.losses(), self.ppl(), strict=True):
            out[f"{prefix}/{d}/loss"] = float(loss)
            out[f"{prefix}/{d}/ppl"] = float(ppl)
        out.update({f"{prefix}/{k}": v for k, v in self.aggregates().items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form; :meth:`from_dict` reads it back."""
        per_domain = {
            d: {
                "loss_sum": float(s),
                "tokens": int(n),
                "loss": float(loss),
                "ppl": float(ppl),
                "natural_weight": float(w),
            }
            for d, s, n, loss, ppl, w in zip(
                self.domains,
                self.loss_sum,
                self.token_count,
                self.losses(),
                self.ppl(),
                self.natural_weights,
                strict=True,
            )
        }
        return {
            "domains": per_domain,
            "aggregates": self.aggregates(),
            "worst_domain": self.worst_domain(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Rebuild a result saved with :meth:`to_dict`."""
        per_domain = data["domains"]
        names = tuple(per_domain)
        return cls(
            domains=names,
            loss_sum=np.array([per_domain[d]["loss_sum"] for d in names], np.float64),
            token_count=np.array([per_domain[d]["tokens"] for d in names], np.int64),
            natural_weights=np.array([per_domain[d]["natural_weight"] for d in names], np.float64),
        )

    def format_table(self) -> str:
        """Readable table: one row per domain (tokens, loss, ppl), then the aggregates."""
        rows = [
            [d, f"{int(n):,}", f"{loss:.4f}", f"{ppl:.3f}", f"{w:.3f}"]
            for d, n, loss, ppl, w in zip(
                self.domains,
                self.token_count,
                self.losses(),
                self.ppl(),
                self.natural_weights,
                strict=True,
            )
        ]
        agg = self.aggregates()
        worst = f"{self.worst_domain()}, loss {agg['worst_logppl']:.4f}"
        footer = [
            ["mean_ppl", f"{agg['mean_ppl']:.3f}  (unweighted mean of PPLs)"],
            ["geo_ppl", f"{agg['geo_ppl']:.3f}  (exp of mean loss {agg['mean_logppl']:.4f})"],
            [
                "natural_ppl",
                f"{agg['natural_ppl']:.3f}  (natural weights, loss {agg['natural_loss']:.4f})",
            ],
            ["worst_ppl", f"{agg['worst_ppl']:.3f}  ({worst})"],
        ]
        return text_table(
            ["domain", "tokens", "loss", "ppl", "w_nat"],
            rows,
            sep=" ",
            min_widths=(12, 12, 8, 10, 6),
            rule=None,
            footer=footer,
        )


def validation_windows(
    tokens: np.ndarray, *, seq_len: int, max_tokens: int | None, domain: str = "?"
) -> np.ndarray:
    """(n, seq_len) int64 windows of a validation split by the module's rule (see above)."""
    total = int(tokens.shape[0])
    if total < 2:
        raise DataError(
            f"domain {domain!r}: validation split has {total} token(s), need >= 2; "
            f"re-prepare the store with a larger validation share for this domain"
        )
    if total < seq_len:
        return np.asarray(tokens, dtype=np.int64).reshape(1, total)
    n = evaluated_tokens(total, seq_len=seq_len, max_tokens=max_tokens) // seq_len
    return np.asarray(tokens[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


def evaluated_tokens(total: int, *, seq_len: int, max_tokens: int | None) -> int:
    """How many tokens from the start of a ``total``-token validation split the evaluation
    reads (:func:`validation_windows`); text after them is never scored."""
    if total < seq_len:
        return total
    n = total // seq_len
    if max_tokens is not None:
        n = min(n, max_tokens // seq_len)
    return n * seq_len


def evaluate(
    model: torch.nn.Module,
    store: ValidationSource,
    *,
    seq_len: int,
    batch_size: int = 16,
    max_tokens_per_domain: int | None = 200_000,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score every domain's validation split; see the module docstring for the rule."""
    if seq_len < 2:
        raise ConfigError(f"data.seq_len must be >= 2, got {seq_len}")
    if batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {batch_size}")
    if max_tokens_per_domain is not None and max_tokens_per_domain < seq_len:
        raise ConfigError(
            f"eval.max_tokens_per_domain={max_tokens_per_domain} is below one window "
            f"(data.seq_len={seq_len}); raise it or set it to null for the whole split"
        )
    domains = tuple(store.domains)
    weights = natural_weights(store.train_tokens_per_domain())
    windows = [
        validation_windows(
            store.tokens(d, "val"), seq_len=seq_len, max_tokens=max_tokens_per_domain, domain=d
        )
        for d in domains
    ]
    _check_vocab(model, domains, windows)

    device = next(model.parameters()).device
    loss_sum = np.zeros(len(domains), dtype=np.float64)
    token_count = np.zeros(len(domains), dtype=np.int64)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _progress_bar(windows, batch_size, progress) as bar:
            for k, w in enumerate(windows):
                for start in range(0, w.shape[0], batch_size):
                    ids = torch.from_numpy(w[start : start + batch_size]).to(device)
                    with _autocast(device, autocast_dtype):
                        logits = model(input_ids=ids, use_cache=False).logits
                    losses = token_losses(logits, ids)
                    loss_sum[k] += float(losses.sum(dtype=torch.float64))
                    token_count[k] += losses.numel()
                    bar.update(1)
    finally:
        model.train(was_training)
    logger.info(
        "eval: %d domains, %s predicted tokens in %.1fs",
        len(domains),
        f"{int(token_count.sum()):,}",
        time.perf_counter() - started,
    )
    return EvalResult(domains, loss_sum, token_count, weights)


def _check_vocab(model: torch.nn.Module, domains: Sequence[str], windows: list[np.ndarray]) -> None:
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is None:
        return
    for d, w in zip(domains, windows, strict=True):
        top = int(w.max())
        if top >= vocab:
            raise DataError(
                f"domain {d!r}: validation token id {top} >= model vocab_size {vocab}; the "
                f"store was tokenised with a different tokenizer than the model's"
            )


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _progress_bar(
    windows: list[np.ndarray], batch_size: int, enabled: bool
) -> contextlib.AbstractContextManager[Any]:
    from tqdm.auto import tqdm

    total = sum(-(-w.shape[0] // batch_size) for w in windows)
    return tqdm(total=total, desc="eval", unit="batch", disable=not enabled, dynamic_ncols=True)
