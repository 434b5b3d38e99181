"""MeCo: metadata conditioning then cooldown (arXiv 2501.01956) — prefixes, loss mask, schedule.

MeCo prepends a document's source (``"URL: en.wikipedia.org\\n\\n"``) to every packed document
for the first steps of a run and trains on plain documents for the rest, in ONE run. This
module holds the parts that do not depend on how documents are packed:

Schedule
    s_c = floor((1 − ``meco.cooldown_fraction``) · T). Steps 1..s_c are the conditioning phase
    (``train/phase`` = 0), steps s_c+1..T the cooldown (phase 1). The phase is a function of
    the step alone, so a resumed run switches at the same step; optimizer, LR schedule, step
    counter and RNGs simply continue ("cooldown" is about the data, not the learning rate).

Prefixes (:class:`PrefixTable`)
    Each document's metadata string becomes a prefix by ``meco.metadata_variant`` and
    ``meco.metadata_template`` (:func:`mixlab.data.metadata.render_prefix`). Each *distinct*
    prefix text is tokenised once with the store's tokenizer, without special tokens.
    A document without usable metadata follows ``meco.missing_metadata``: ``skip_prefix`` (no
    prefix; counted and reported), ``error``, or ``use_domain_name`` (the template is filled
    with the domain's name). A prefix longer than ``meco.max_prefix_tokens`` is a ConfigError.

Token layout of one packed document (:func:`segment_layout`)
    ``[BOS] + tok(prefix) + tok(doc)`` (the store's documents already end with EOS). Labels are
    −100 (:data:`~mixlab.model.losses.IGNORE_INDEX`) on BOS and on every prefix token (unless
    ``meco.mask_metadata`` is false), so metadata tokens are never targets; HF shifts labels
    internally, so the first document token *is* a target, predicted from the last prefix
    token. A document with neither BOS nor prefix in front has nothing to predict its first
    token from: that label is −100 too (the same rule evaluation uses).

Packing (``meco.packing``)
    ``doc_masked``: several documents per sequence, block-diagonal causal attention and
    positions restarting at each document (:func:`model_inputs` turns the batch's
    ``segment_ids``/``position_ids`` into a 4-D additive mask for Hugging Face models);
    ``pad``: one document per sequence; ``concat``: documents packed with plain causal
    attention (no isolation; an ablation). :func:`resolve_packing` checks once that the model
    really isolates documents under ``doc_masked`` and falls back to ``pad`` with a warning
    if it does not (METHODS.md §4: "doc_masked if supported, else pad").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from mixlab.data.metadata import render_prefix
from mixlab.errors import ConfigError, DataError
from mixlab.model.losses import IGNORE_INDEX

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from mixlab.config import MecoConfig

logger = logging.getLogger(__name__)

PACKINGS = ("doc_masked", "pad", "concat")
FILLS = ("split", "complete")
MISSING_METADATA = ("skip_prefix", "error", "use_domain_name")
EVAL_MODES = ("uncond", "cond_true", "cond_fixed")
# Batch keys the model consumes besides input_ids; everything else (labels, domain_id) is ours.
MODEL_EXTRA_KEYS = ("position_ids",)


# ----------------------------------------------------------------------------- schedule
def condition_steps(max_steps: int, cooldown_fraction: float) -> int:
    """s_c = floor((1 − cooldown_fraction) · T), computed exactly on the decimal fraction.

    ``Fraction(repr(x))`` reads 0.1 as 1/10, so e.g. T = 30 gives 27, not 26 from a float
    product that lands just below an integer.
    """
    if not 0.0 <= cooldown_fraction <= 1.0:
        raise ConfigError(f"meco.cooldown_fraction: must be in [0, 1], got {cooldown_fraction}")
    return int((1 - Fraction(repr(float(cooldown_fraction)))) * max_steps)


def phase_of_step(step: int, condition_end: int) -> int:
    """0 while conditioning (step <= s_c), 1 in the cooldown (1-based global step)."""
    return 0 if step <= condition_end else 1


def unescape_prefix(text: str) -> str:
    r"""Turn the escapes ``\n``, ``\t`` and ``\\`` typed on a shell into the characters."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# ----------------------------------------------------------------------------- prefixes
class MetadataSource(Protocol):
    """What prefix building needs from a store (:class:`~mixlab.data.store.ShardStore`)."""

    @property
    def domains(self) -> tuple[str, ...]: ...
    def metadata(self, domain: str, split: str = "train") -> list[str]: ...


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Token ids of each text, without special tokens (one batched call)."""
    if not texts:
        return []
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


@dataclass(frozen=True, eq=False)
class PrefixTable:
    """Tokenised prefixes of one split: a few distinct prefixes and, per document, which one.

    Attributes:
        texts: the distinct prefix texts; ``tokens[i]`` are the ids of ``texts[i]``.
        doc_prefix: domain -> (n_docs,) int64 index into ``texts``, −1 = no prefix.
        missing: domain -> number of documents without usable metadata.
    """

    texts: tuple[str, ...]
    tokens: tuple[np.ndarray, ...]
    doc_prefix: Mapping[str, np.ndarray]
    missing: Mapping[str, int]

    def prefix_ids(self, index: int) -> np.ndarray:
        """Ids of prefix ``index`` (an empty array for −1)."""
        return self.tokens[index] if index >= 0 else np.empty(0, dtype=np.int64)

    def lengths(self) -> np.ndarray:
        """(P,) token length of each distinct prefix."""
        return np.array([len(t) for t in self.tokens], dtype=np.int64)

    def fingerprint(self) -> str:
        """Identity of the prefixes and their assignment (checked on resume)."""
        sha = hashlib.sha256()
        for text, ids in zip(self.texts, self.tokens, strict=True):
            sha.update(text.encode("utf-8") + b"\0" + ids.tobytes())
        for domain in sorted(self.doc_prefix):
            sha.update(domain.encode("utf-8") + self.doc_prefix[domain].tobytes())
        return sha.hexdigest()[:16]


def build_prefix_table(
    store: MetadataSource,
    meco: MecoConfig,
    tokenizer: Tokenizer,
    *,
    split: str = "train",
) -> PrefixTable:
    """Render and tokenise every document's prefix of ``split`` (see the module docstring)."""
    index: dict[str, int] = {}
    doc_prefix: dict[str, np.ndarray] = {}
    missing: dict[str, int] = {}
    for domain in store.domains:
        rows = store.metadata(domain, split)
        ids = np.full(len(rows), -1, dtype=np.int64)
        absent = 0
        for i, metadata in enumerate(rows):
            text = render_prefix(
                metadata,
                variant=meco.metadata_variant,
                template=meco.metadata_template,
                fixed_value=meco.fixed_value,
            )
            if text is None:
                absent += 1
                if meco.missing_metadata == "error":
                    raise DataError(
                        f"domain {domain!r} ({split}) document {i} has no usable metadata "
                        f"({metadata!r}) and meco.missing_metadata=error; prepare the store with "
                        "--metadata-field, or set meco.missing_metadata=skip_prefix | "
                        "use_domain_name"
                    )
                if meco.missing_metadata == "skip_prefix":
                    continue
                text = render_prefix(domain, variant="field", template=meco.metadata_template)
                assert text is not None
            ids[i] = index.setdefault(text, len(index))
        doc_prefix[domain], missing[domain] = ids, absent
    texts = tuple(index)
    tokens = tuple(encode_texts(tokenizer, texts))
    table = PrefixTable(texts, tokens, doc_prefix, missing)
    check_prefix_lengths(table.texts, table.tokens, meco.max_prefix_tokens)
    total_missing = sum(missing.values())
    if total_missing:
        logger.info(
            "meco: %d %s document(s) have no metadata (%s): %s",
            total_missing,
            split,
            meco.missing_metadata,
            ", ".join(f"{d}={n}" for d, n in missing.items() if n),
        )
    return table


def check_prefix_lengths(
    texts: Sequence[str], tokens: Sequence[np.ndarray], max_prefix_tokens: int
) -> None:
    """ConfigError naming ``meco.max_prefix_tokens`` if any prefix is longer."""
    for text, ids in zip(texts, tokens, strict=True):
        if len(ids) > max_prefix_tokens:
            raise ConfigError(
                f"meco.max_prefix_tokens={max_prefix_tokens}: the prefix {text!r} has "
                f"{len(ids)} tokens; raise meco.max_prefix_tokens (and data.seq_len if needed) "
                "or choose a shorter meco.metadata_template / meco.metadata_variant"
            )


def chunk_length(seq_len: int, bos_id: int | None, max_prefix_tokens: int) -> int:
    """Tokens of a document piece: BOS + the longest allowed prefix + a piece fit one sequence."""
    chunk = seq_len - (bos_id is not None) - max_prefix_tokens
    if chunk < 2:
        raise ConfigError(
            f"data.seq_len={seq_len} leaves {chunk} document token(s) per sequence after BOS and "
            f"meco.max_prefix_tokens={max_prefix_tokens}; raise data.seq_len or lower "
            "meco.max_prefix_tokens"
        )
    return chunk


# ----------------------------------------------------------------------------- layout
def segment_layout(
    prefix: np.ndarray,
    doc: np.ndarray,
    *,
    bos_id: int | None,
    mask_metadata: bool = True,
    first_target: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(ids, labels, n_metadata)`` of one packed document: [BOS] + prefix + doc.

    Labels are −100 on BOS and (with ``mask_metadata``) on the prefix. ``first_target`` says
    whether the first document token is a target; by default it is when something (BOS or
    prefix) precedes it. With ``mask_metadata=False`` prefix tokens are targets, except a
    first token with nothing in front of it.
    """
    head = [] if bos_id is None else [bos_id]
    ids = np.concatenate([np.asarray(head, np.int64), prefix, doc]).astype(np.int64)
    labels = ids.copy()
    n_head, n_prefix = len(head), len(prefix)
    labels[:n_head] = IGNORE_INDEX
    if mask_metadata:
        labels[n_head : n_head + n_prefix] = IGNORE_INDEX
    elif n_head == 0 and n_prefix:
        labels[0] = IGNORE_INDEX  # the first prefix token has nothing to be predicted from
    if first_target is None:
        first_target = n_head + n_prefix > 0
    if not first_target and len(doc):
        labels[n_head + n_prefix] = IGNORE_INDEX
    return ids, labels, n_prefix


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, L, L) additive mask: 0 where query i may attend key j (same segment, j <= i).

    The additive float form (0 / dtype min) is what Hugging Face models accept as a ready-made
    4-D mask in both the SDPA and the eager attention paths.
    """
    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & causal
    zero = torch.zeros((), dtype=dtype, device=segment_ids.device)
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=segment_ids.device)
    return torch.where(allowed, zero, blocked)[:, None]


def model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keyword arguments a Hugging Face causal LM gets for a sampler batch.

    Plain batches give ``input_ids`` only. Document-masked batches (``segment_ids``) add
    ``position_ids`` restarting per document and the block-diagonal 4-D ``attention_mask``.
    """
    out = {"input_ids": batch["input_ids"]}
    for key in MODEL_EXTRA_KEYS:
        if key in batch:
            out[key] = batch[key]
    if "segment_ids" in batch:
        out["attention_mask"] = block_causal_mask(batch["segment_ids"], torch.float32)
    return out


def supports_doc_masking(model: torch.nn.Module) -> bool:
    """Does ``model`` isolate packed documents given :func:`model_inputs`' mask and positions?

    Two documents (5 and 7 tokens) in one sequence: editing a token of the first must leave
    the second's logits unchanged, and those must equal the second document scored alone.
    """
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 2)
    ids = (torch.arange(12) * 7 + 3) % vocab
    batch = {
        "input_ids": ids[None],
        "segment_ids": torch.tensor([[0] * 5 + [1] * 7]),
        "position_ids": torch.tensor([list(range(5)) + list(range(7))]),
    }
    edited = ids.clone()
    edited[1] = (edited[1] + 1) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a = model(**model_inputs(batch)).logits[0, 5:].float()
            b = model(**model_inputs({**batch, "input_ids": edited[None]})).logits[0, 5:].float()
            alone = model(input_ids=ids[None, 5:]).logits[0].float()
    except (TypeError, ValueError, RuntimeError) as exc:
        logger.info("doc_masked probe failed: %s: %s", type(exc).__name__, exc)
        return False
    finally:
        model.train(was_training)
    return bool(torch.allclose(a, b, atol=1e-5) and torch.allclose(a, alone, atol=1e-4))


def resolve_packing(requested: str, model: torch.nn.Module) -> str:
    """``requested``, or ``pad`` when ``doc_masked`` is asked for and the model cannot do it."""
    if requested != "doc_masked" or supports_doc_masking(model):
        return requested
    logger.warning(
        "meco.packing=doc_masked: %s does not isolate packed documents with a 4-D attention "
        "mask and restarted position_ids; falling back to packing=pad (one document per "
        "sequence)",
        type(model).__name__,
    )
    return "pad"


# ----------------------------------------------------------------------------- logging
class PackingTotals(Protocol):
    """What :class:`MecoLog` reads from a document sampler."""

    condition_steps: int

    def totals(self) -> dict[str, int]: ...


class MecoLog:
    """Per-step MeCo statistics between two train log lines, from the sampler's totals.

    Keys: ``train/phase`` (of the last step), ``train/context_tokens`` and
    ``train/loss_tokens`` (per step, global: non-padding positions and target tokens),
    ``train/metadata_share`` (share of context positions S·L filled by prefix tokens),
    ``train/pad_share``, and the running totals ``train/context_tokens_total`` /
    ``train/loss_tokens_total`` for token-budget comparisons with a baseline.
    """

    def __init__(self, sampler: PackingTotals, step: int) -> None:
        self.sampler = sampler
        self._last = sampler.totals()
        self._step = step

    def record(self, step: int) -> dict[str, Any]:
        now = self.sampler.totals()
        steps = max(1, step - self._step)
        delta = {k: now[k] - self._last[k] for k in now}
        positions = max(1, delta["positions"])
        self._last, self._step = now, step
        return {
            "train/phase": phase_of_step(step, self.sampler.condition_steps),
            "train/context_tokens": delta["context_tokens"] / steps,
            "train/loss_tokens": delta["loss_tokens"] / steps,
            "train/metadata_share": delta["metadata_tokens"] / positions,
            "train/pad_share": delta["pad_tokens"] / positions,
            "train/context_tokens_total": now["context_tokens"],
            "train/loss_tokens_total": now["loss_tokens"],
        }
