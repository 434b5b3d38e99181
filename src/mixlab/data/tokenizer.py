"""Tokenizers: train a byte-level BPE, load an existing one, and name its special tokens.

A shard store is tied to exactly one tokenizer (saved next to the shards as ``tokenizer.json``
and identified by :func:`tokenizer_hash`), so everything here returns a Hugging Face
``tokenizers.Tokenizer`` — the fast Rust object whose ``encode_batch`` tokenizes on all cores.

* :func:`train_tokenizer` learns a byte-level BPE (GPT-2 style: text is mapped to bytes, so
  every string is encodable and no token is ever unknown) from an iterable of texts. The 256
  byte symbols are always in the vocabulary; merges fill it up to ``vocab_size``. Special
  tokens get the lowest ids: ``<|endoftext|>`` = 0 (the end-of-document token appended after
  every document in the shards) and ``<|pad|>`` = 1. There is no BOS token; :func:`bos_id`
  returns ``None`` for these tokenizers (GPT-2 convention: EOS doubles as a separator).
  Knobs: ``vocab_size`` (>= 256 + 2) and ``min_frequency`` (a pair seen fewer times is never
  merged, which keeps one-off strings out of the vocabulary of a small sample).
* :func:`load_tokenizer` accepts a ``tokenizer.json`` file or a local Hugging Face tokenizer
  folder (``tokenizer.json`` inside; otherwise ``transformers.AutoTokenizer`` converts a slow
  tokenizer offline and its ``backend_tokenizer`` is used). Nothing is downloaded.
* :func:`eos_id` / :func:`bos_id` find the special tokens by their usual spellings;
  :func:`vocab_size_of` is the id range the shards must hold.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mixlab.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN)  # ids 0 and 1 in a trained tokenizer

# Spellings of end/begin-of-sequence tokens across common tokenizer families, most specific
# first (GPT-2/NeoX/Qwen, Llama/T5, Gemma, BERT-style).
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "[SEP]")
BOS_CANDIDATES = ("<|bos|>", "<s>", "<bos>", "<|begin_of_text|>", "[CLS]")

_BYTE_ALPHABET = 256


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer of at most ``vocab_size`` ids on ``texts``.

    The vocabulary can come out smaller than ``vocab_size`` when the texts do not contain
    enough pairs seen ``min_frequency`` times; :func:`vocab_size_of` reports the real size.
    """
    minimum = _BYTE_ALPHABET + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ConfigError(
            f"vocab_size={vocab_size}: a byte-level BPE needs at least {minimum} ids "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens); use e.g. 8192"
        )
    if min_frequency < 1:
        raise ConfigError(f"min_frequency={min_frequency}: must be >= 1")
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a document's first word is encoded as written; the shards
    # concatenate documents separated by EOS, so no artificial leading space is wanted.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer)
    if tok.get_vocab_size() <= minimum:
        raise DataError(
            "tokenizer training learnt no merges: the sample text is empty or too small "
            f"(vocabulary {tok.get_vocab_size()}); give more text or lower min_frequency"
        )
    logger.info("trained a byte-level BPE with %d ids", tok.get_vocab_size())
    return tok


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A fast tokenizer from a ``tokenizer.json`` file or a local HF tokenizer folder."""
    path = Path(path)
    if path.is_file():
        return _from_file(path)
    if not path.is_dir():
        raise DataError(
            f"tokenizer {path}: no such file or folder; pass a tokenizer.json file or a local "
            "Hugging Face tokenizer folder (nothing is downloaded)"
        )
    if (path / "tokenizer.json").is_file():
        return _from_file(path / "tokenizer.json")
    # A folder with only a slow tokenizer (vocab + merges, sentencepiece model): transformers
    # converts it to a fast one offline, if it can.
    try:
        from transformers import AutoTokenizer

        hf_tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises many types for unusable folders
        raise DataError(
            f"tokenizer folder {path}: no tokenizer.json, and transformers could not load it "
            f"offline ({type(exc).__name__}: {exc}); save a fast tokenizer there with "
            "`AutoTokenizer.from_pretrained(...).save_pretrained(folder)`"
        ) from exc
    backend = getattr(hf_tok, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise DataError(
            f"tokenizer folder {path}: transformers loaded a slow {type(hf_tok).__name__} "
            "without a fast (Rust) backend; convert it to tokenizer.json first"
        )
    return backend


def _from_file(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception on bad JSON
        raise DataError(f"tokenizer file {path}: not a valid tokenizer.json ({exc})") from exc


def tokenizer_hash(tok: Tokenizer) -> str:
    """Identity of a tokenizer: first 16 hex digits of the sha256 of its canonical JSON."""
    return hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()[:16]


def eos_id(tok: Tokenizer) -> int:
    """Id of the end-of-document token (first of :data:`EOS_CANDIDATES` the vocab has)."""
    for token in EOS_CANDIDATES:
        found = tok.token_to_id(token)
        if found is not None:
            return int(found)
    raise DataError(
        f"the tokenizer has no end-of-document token (looked for {', '.join(EOS_CANDIDATES)}); "
        "mixlab appends one after every document — add it as a special token"
    )


def bos_id(tok: Tokenizer) -> int | None:
    """Id of a begin-of-sequence token, or ``None`` when the vocabulary has none."""
    for token in BOS_CANDIDATES:
        found = tok.token_to_id(token)
        if found is not None:
            return int(found)
    return None


def vocab_size_of(tok: Tokenizer) -> int:
    """Number of ids the model must embed: covers added tokens and any gap in the id range."""
    size = tok.get_vocab_size(with_added_tokens=True)
    vocab = tok.get_vocab(with_added_tokens=True)
    # Some converted tokenizers have holes, so the largest id can exceed the count.
    return max(size, max(vocab.values(), default=-1) + 1)
