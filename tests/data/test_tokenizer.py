"""Tokenizer training, loading (file, folder, slow-tokenizer folder) and special-token lookup."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from mixlab.data.tokenizer import (
    bos_id,
    eos_id,
    load_tokenizer,
    tokenizer_hash,
    train_tokenizer,
    vocab_size_of,
)
from mixlab.errors import ConfigError, DataError
from tests.conftest import WORDS as BASE_WORDS

WORDS = (*BASE_WORDS, "mixture", "domain", "token")


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(corpus(), 300)


def test_vocab_size_respected_and_special_ids(tok: Tokenizer) -> None:
    assert 258 < tok.get_vocab_size() <= 300
    assert vocab_size_of(tok) == tok.get_vocab_size()
    assert eos_id(tok) == 0
    assert tok.token_to_id("<|pad|>") == 1
    assert bos_id(tok) is None


def test_merges_shorten_frequent_words(tok: Tokenizer) -> None:
    text = "the mixture of the domain"
    assert len(tok.encode(text, add_special_tokens=False).ids) < len(text.encode("utf-8"))


@pytest.mark.parametrize(
    "text", ["the of and", "  leading spaces", "héllo wörld — 数据 😀\n\ttab", "x" * 50]
)
def test_roundtrip_decode(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text


def test_training_is_deterministic_and_hash_tracks_content(tok: Tokenizer) -> None:
    again = train_tokenizer(corpus(), 300)
    assert tokenizer_hash(again) == tokenizer_hash(tok)
    assert len(tokenizer_hash(tok)) == 16
    assert tokenizer_hash(train_tokenizer(corpus(), 280)) != tokenizer_hash(tok)


def test_vocab_size_too_small_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="vocab_size=100"):
        train_tokenizer(corpus(), 100)


def test_no_text_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no merges"):
        train_tokenizer([], 300)


def test_load_file_and_folder(tok: Tokenizer, tmp_path: Path) -> None:
    tok.save(str(tmp_path / "tokenizer.json"))
    from_file = load_tokenizer(tmp_path / "tokenizer.json")
    from_folder = load_tokenizer(str(tmp_path))
    assert tokenizer_hash(from_file) == tokenizer_hash(tok)
    assert tokenizer_hash(from_folder) == tokenizer_hash(tok)


def test_load_slow_tokenizer_folder(tok: Tokenizer, tmp_path: Path) -> None:
    # vocab.json + merges.txt only: transformers converts it to a fast tokenizer offline.
    tok.model.save(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "GPT2Tokenizer"}), encoding="utf-8"
    )
    loaded = load_tokenizer(tmp_path)
    text = "the domain of the mixture"
    assert loaded.encode(text, add_special_tokens=False).ids == tok.encode(text).ids
    assert eos_id(loaded) == 0


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json"):
        load_tokenizer(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no tokenizer\.json"):
        load_tokenizer(empty)


def test_special_token_lookup_follows_common_spellings() -> None:
    llama_like = Tokenizer(models.BPE())
    llama_like.add_special_tokens(["<unk>", "<s>", "</s>"])
    assert eos_id(llama_like) == 2
    assert bos_id(llama_like) == 1
    bare = Tokenizer(models.BPE())
    with pytest.raises(DataError, match="end-of-document"):
        eos_id(bare)
