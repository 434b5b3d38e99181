"""Sampling: from domain weights to packed, seeded, rank-aware training batches.

:class:`MixtureSampler` reads windows of ``seq_len`` tokens from a prepared shard store. Each
optimiser step's domain labels are drawn from a generator seeded by ``(seed, step)`` under the
current weights (``mixed``, ``stratified`` or ``homogeneous``), and each domain's windows are
shuffled per epoch with a generator seeded by ``(seed, domain, epoch)``. The sampler counts
served tokens per domain (achieved vs requested shares, epochs of repetition) and saves its
position in a plain ``state_dict`` for exact resume.

:class:`DocumentSampler` (MeCo) draws the same domain labels but fills each sequence with whole
documents (pieces), each preceded by its metadata prefix during the conditioning phase, with
the loss mask and the inputs of block-diagonal attention.
"""

from __future__ import annotations

from mixlab.sampling.documents import DocumentSampler
from mixlab.sampling.sampler import MODES, MixtureSampler, TokenSource

__all__ = ["MODES", "DocumentSampler", "MixtureSampler", "TokenSource"]
