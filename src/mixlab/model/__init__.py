"""Models: Hugging Face causal LMs from small presets, config files or local folders.

* :mod:`mixlab.model.factory` — :func:`build_model` (preset / ``config.json`` / local model
  folder, vocabulary taken from the tokenizer, seeded init) and the :data:`PRESETS` table.
* :mod:`mixlab.model.losses` — per-token cross-entropy and per-domain loss sums from one
  forward pass of a mixed batch.
* :mod:`mixlab.model.meco` — MeCo (arXiv 2501.01956): the conditioning/cooldown schedule,
  tokenised metadata prefixes, the loss mask of a packed document and the block-diagonal
  attention inputs (:func:`~mixlab.model.meco.model_inputs`).

Importing this package does not import ``transformers``; the factory does so when it builds.
"""

from __future__ import annotations

from mixlab.model.factory import PRESETS, build_model, count_parameters, describe_presets
from mixlab.model.losses import (
    IGNORE_INDEX,
    masked_mean,
    per_domain_sums,
    target_mask,
    token_losses,
)

__all__ = [
    "IGNORE_INDEX",
    "PRESETS",
    "build_model",
    "count_parameters",
    "describe_presets",
    "masked_mean",
    "per_domain_sums",
    "target_mask",
    "token_losses",
]
