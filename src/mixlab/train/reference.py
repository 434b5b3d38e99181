"""A frozen reference model that scores the trainer's micro-batches (DoReMi, METHODS.md §3).

DoReMi's Group DRO needs, per domain, the sum over that domain's tokens of the *clipped* excess
loss ``max(l_theta,j - l_ref,j, 0)``. The clip is per token, so the sums cannot be rebuilt from
per-domain means: :class:`ReferenceScorer` forwards the reference on exactly the micro-batch the
trained model just saw and :func:`clipped_excess_sums` reduces both token losses at once.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch

from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, DataError
from mixlab.model.losses import per_domain_sums, target_mask, token_losses
from mixlab.model.meco import model_inputs
from mixlab.train.build import model_from_config
from mixlab.train.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


class ReferenceScorer:
    """A frozen reference LM that scores the trainer's micro-batches (DoReMi, METHODS.md §3).

    Per token j of a micro-batch the excess loss is clipped *per token*,
    ``max(l_theta,j - l_ref,j, 0)``, then summed per domain: the sums cannot be rebuilt from
    per-domain means. The reference runs under ``no_grad`` in eval mode, its parameters have
    ``requires_grad=False`` and it is never handed to the optimiser.
    """

    def __init__(
        self,
        path: str | Path,
        store: ShardStore,
        seq_len: int,
        device: torch.device | None = None,
    ) -> None:
        state = load_checkpoint(path)
        if not state.get("finished"):
            log.warning("reference %s is unfinished (step %d); using it as is", path, state["step"])
        if state["store_fingerprint"] != store.fingerprint:
            ref_store_path = RunConfig.from_dict(state["config"]).data.store
            try:
                ref_store = ShardStore(ref_store_path)
            except DataError as exc:
                raise ConfigError(
                    f"mixing.doremi.reference={path}: the reference was trained on another "
                    f"store, whose tokenizer cannot be checked ({exc})"
                ) from exc
            if ref_store.tokenizer_hash != store.tokenizer_hash:
                raise ConfigError(
                    f"mixing.doremi.reference={path}: the reference was trained with another "
                    f"tokenizer (store {ref_store.path}); train it on a store made with the "
                    "same tokenizer as data.store"
                )
        self.model = model_from_config(RunConfig.from_dict(state["config"]), store)
        self.model.load_state_dict(state["model"])
        self.model.to(device or torch.device("cpu"))
        self.model.requires_grad_(False)
        self.model.eval()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and limit < seq_len:
            raise ConfigError(
                f"mixing.doremi.reference={path}: the reference handles {limit} positions but "
                f"data.seq_len is {seq_len}; lower data.seq_len or use a longer reference"
            )

    def score(
        self,
        batch: dict[str, torch.Tensor],
        tok_loss: torch.Tensor,
        num_domains: int,
        autocast: contextlib.AbstractContextManager[Any],
    ) -> dict[str, torch.Tensor]:
        """Per-domain (K,) ``excess_sum``, ``ref_loss_sum`` and ``clipped_count`` (float64)."""
        with torch.no_grad(), autocast:
            ref_logits = self.model(**model_inputs(batch)).logits
        ref_loss = token_losses(ref_logits, batch["labels"])
        return clipped_excess_sums(tok_loss.detach(), ref_loss, batch, num_domains)


def clipped_excess_sums(
    tok_loss: torch.Tensor,
    ref_loss: torch.Tensor,
    batch: dict[str, torch.Tensor],
    num_domains: int,
) -> dict[str, torch.Tensor]:
    """Sum max(tok_loss - ref_loss, 0), ref_loss and [tok_loss < ref_loss] per domain."""
    mask = target_mask(batch["labels"])
    diff = tok_loss - ref_loss
    sums = {
        "excess_sum": diff.clamp(min=0),
        "ref_loss_sum": ref_loss,
        "clipped_count": (diff < 0).to(tok_loss.dtype),
    }
    return {
        key: per_domain_sums(value, mask, batch["domain_id"], num_domains)[0].double()
        for key, value in sums.items()
    }
