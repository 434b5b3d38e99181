"""An in-memory stand-in for ShardStore, with self-describing token values.

Token ``j`` of domain ``d`` has the value ``d * DOMAIN_STRIDE + j``, so any window tells the
tests which domain and which position it was cut from, without a real tokenizer or disk files.
Documents are fixed-size chunks whose last token plays the EOS role; the sampler never looks
inside them, but the offsets keep the double faithful to the ShardStore contract.
"""

from __future__ import annotations

import hashlib

import numpy as np

DOMAIN_STRIDE = 1_000_000
DOC_LEN = 50


class FakeStore:
    """Duck-typed ShardStore: ``domains``, ``tokens``, ``doc_offsets``, ``num_tokens`` ..."""

    def __init__(self, train_sizes: dict[str, int], val_size: int = 300) -> None:
        self.domains: tuple[str, ...] = tuple(sorted(train_sizes))
        self.eos_id = 0
        self.bos_id = None
        self._tokens: dict[tuple[str, str], np.ndarray] = {}
        for d, name in enumerate(self.domains):
            for split, size in (("train", train_sizes[name]), ("val", val_size)):
                values = d * DOMAIN_STRIDE + np.arange(size, dtype=np.uint32)
                self._tokens[(name, split)] = values
        spec = ",".join(f"{d}={train_sizes[d]}" for d in self.domains)
        self.fingerprint = hashlib.sha256(spec.encode()).hexdigest()[:16]

    def tokens(self, domain: str, split: str = "train") -> np.ndarray:
        return self._tokens[(domain, split)]

    def doc_offsets(self, domain: str, split: str = "train") -> np.ndarray:
        n = len(self._tokens[(domain, split)])
        return np.unique(np.append(np.arange(0, n, DOC_LEN, dtype=np.int64), n))

    def num_tokens(self, domain: str, split: str = "train") -> int:
        return len(self._tokens[(domain, split)])

    def num_docs(self, domain: str, split: str = "train") -> int:
        return len(self.doc_offsets(domain, split)) - 1

    def train_tokens_per_domain(self) -> np.ndarray:
        return np.array([self.num_tokens(d) for d in self.domains], dtype=np.int64)


def decode(input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(domain index, position) of every token value written by :class:`FakeStore`."""
    ids = np.asarray(input_ids)
    return ids // DOMAIN_STRIDE, ids % DOMAIN_STRIDE
