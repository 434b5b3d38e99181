"""Shard writer and ShardStore: round trip, dtypes, offsets, metadata, checksums, damage."""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from mixlab.data.prepare import prepare_store
from mixlab.data.readers import Document
from mixlab.data.shards import DomainWriter, SplitWriter, token_dtype
from mixlab.data.store import ShardStore, file_sha256
from mixlab.errors import DataError
from tests.conftest import WORDS


def make_docs(n_per_domain: int = 60, seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for i in range(n_per_domain):
        prose = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
        digits = " ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(3, 20)))
        docs.append(Document(prose, "prose", f"https://p.org/{i}", f"p.jsonl:{i}"))
        docs.append(Document(digits, "digits", "" if i % 2 else f"n{i} ü", f"d.jsonl:{i}"))
    return docs


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return make_docs()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, docs: list[Document]) -> Path:
    out = tmp_path_factory.mktemp("s") / "store"
    prepare_store(lambda: docs, out, vocab_size=300, val_fraction=0.2, progress=False)
    return out


@pytest.fixture()
def store_copy(store_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store_path, tmp_path / "copy"))


def test_round_trip_decodes_every_document(store_path: Path, docs: list[Document]) -> None:
    store = ShardStore(store_path)
    tok = store.tokenizer()
    assert store.domains == ("digits", "prose")
    for domain in store.domains:
        expected = [(d.text, d.metadata) for d in docs if d.domain == domain]
        got = []
        for split in ("train", "val"):
            tokens, offsets = store.tokens(domain, split), store.doc_offsets(domain, split)
            assert offsets.dtype == np.int64 and offsets[0] == 0 and offsets[-1] == tokens.size
            assert store.num_tokens(domain, split) == tokens.size
            assert store.num_docs(domain, split) == offsets.size - 1
            meta = store.metadata(domain, split)
            assert len(meta) == store.num_docs(domain, split)
            for i in range(offsets.size - 1):
                doc = tokens[offsets[i] : offsets[i + 1]]
                assert doc[-1] == store.eos_id and store.eos_id not in doc[:-1]
                got.append((tok.decode(doc[:-1].tolist()), meta[i]))
        assert sorted(got) == sorted(expected)
    assert store.num_docs("prose", "val") > 0


def test_header_fields(store_path: Path) -> None:
    store = ShardStore(store_path)
    assert store.tokens("prose").dtype == np.uint16
    assert isinstance(store.tokens("prose"), np.memmap)
    assert store.vocab_size == store.tokenizer().get_vocab_size() <= 300
    assert store.eos_id == 0 and store.bos_id is None
    counts = store.train_tokens_per_domain()
    assert counts.dtype == np.int64
    assert counts.tolist() == [store.num_tokens(d) for d in store.domains]
    assert len(store.fingerprint) == 16
    assert ShardStore(store_path).fingerprint == store.fingerprint
    manifest = json.loads((store_path / "manifest.json").read_text())
    assert manifest["domains"]["prose"]["train"]["docs"] == store.num_docs("prose")


def test_pickle_reopens_memmaps(store_path: Path) -> None:
    store = ShardStore(store_path)
    before = np.array(store.tokens("digits"))
    clone = pickle.loads(pickle.dumps(store))
    assert np.array_equal(clone.tokens("digits"), before)
    assert clone.fingerprint == store.fingerprint


def test_verify_detects_a_flipped_byte(store_copy: Path) -> None:
    ShardStore(store_copy).verify()
    path = store_copy / "domains" / "prose" / "train.tokens.bin"
    data = bytearray(path.read_bytes())
    data[7] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train\.tokens\.bin: sha256 differs"):
        ShardStore(store_copy).verify()


def test_verify_detects_edited_metadata(store_copy: Path) -> None:
    path = store_copy / "domains" / "digits" / "val.meta.jsonl"
    path.write_text(path.read_text() + '"extra"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"val\.meta\.jsonl"):
        ShardStore(store_copy).verify()


def test_truncated_token_file_fails_on_open(store_copy: Path) -> None:
    path = store_copy / "domains" / "digits" / "train.tokens.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated"):
        ShardStore(store_copy)


def test_missing_manifest_says_run_prepare(store_copy: Path, tmp_path: Path) -> None:
    (store_copy / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"not a prepared mixlab store .*mixlab prepare"):
        ShardStore(store_copy)
    with pytest.raises(DataError, match="does not exist"):
        ShardStore(tmp_path / "nowhere")


def test_unknown_domain_or_split(store_path: Path) -> None:
    store = ShardStore(store_path)
    with pytest.raises(DataError, match="digits, prose"):
        store.tokens("code")
    with pytest.raises(DataError, match="train, val"):
        store.num_tokens("prose", "test")


# ------------------------------------------------------------------------- writer level
def read_split(root: Path, prefix: str, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, list]:
    tokens = np.fromfile(root / f"{prefix}.tokens.bin", dtype=dtype)
    offsets = np.load(root / f"{prefix}.offsets.npy")
    lines = (root / f"{prefix}.meta.jsonl").read_text(encoding="utf-8").splitlines()
    return tokens, offsets, [json.loads(x) for x in lines]


def test_dtype_follows_vocab_size() -> None:
    assert token_dtype(300) == np.uint16
    assert token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32
    assert token_dtype(200_000) == np.uint32


def test_uint32_writer_keeps_large_ids(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path, "d/train", vocab_size=100_000, eos_id=99_999)
    writer.add([70_000, 1, 65_536], "a")
    writer.add(np.array([5], dtype=np.int64), "")
    info = writer.close()
    tokens, offsets, meta = read_split(tmp_path, "d/train", np.dtype("<u4"))
    assert tokens.tolist() == [70_000, 1, 65_536, 99_999, 5, 99_999]
    assert offsets.tolist() == [0, 4, 6]
    assert meta == ["a", ""]
    assert (info.tokens, info.docs) == (6, 2)
    assert (tmp_path / "d/train.tokens.bin").stat().st_size == 6 * 4
    for entry in info.files.values():
        assert file_sha256(tmp_path / entry["path"]) == entry["sha256"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_small_chunks_and_large_documents(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 300, size=n) for n in (3, 40, 0, 7, 100, 5)]
    writer = SplitWriter(tmp_path, "x/val", vocab_size=300, eos_id=0, chunk_tokens=16)
    for i, ids in enumerate(docs):
        writer.add(ids, f"m{i}")
    info = writer.close()
    tokens, offsets, meta = read_split(tmp_path, "x/val", np.dtype("<u2"))
    expected = np.concatenate([np.append(d, 0) for d in docs])
    assert np.array_equal(tokens, expected)
    assert offsets.tolist() == np.cumsum([0] + [len(d) + 1 for d in docs]).tolist()
    assert meta == [f"m{i}" for i in range(len(docs))]
    assert info.files["tokens"]["sha256"] == file_sha256(tmp_path / "x/val.tokens.bin")


def test_id_outside_vocab_is_rejected(tmp_path: Path) -> None:
    writer = SplitWriter(tmp_path, "d/train", vocab_size=300, eos_id=0)
    with pytest.raises(DataError, match="outside the vocabulary"):
        writer.add([5, 300])
    writer.abort()


def domain_split(tmp_path: Path, flags: list[bool], min_val_docs: int) -> tuple[list, list]:
    writer = DomainWriter(tmp_path, "d", vocab_size=300, eos_id=0, min_val_docs=min_val_docs)
    for i, val in enumerate(flags):
        writer.add(np.array([i + 1]), f"doc{i}", val=val)
    writer.close()
    return [read_split(tmp_path, f"d/{s}", np.dtype("<u2"))[2] for s in ("train", "val")]


def test_domain_writer_tops_up_val_with_the_last_train_docs(tmp_path: Path) -> None:
    train, val = domain_split(tmp_path, [False, True, False, False, False], min_val_docs=3)
    assert val == ["doc1", "doc3", "doc4"]
    assert train == ["doc0", "doc2"]


def test_domain_writer_keeps_one_train_doc(tmp_path: Path) -> None:
    train, val = domain_split(tmp_path / "a", [True, True, True], min_val_docs=1)
    assert (train, val) == (["doc2"], ["doc0", "doc1"])
    train, val = domain_split(tmp_path / "b", [False], min_val_docs=1)
    assert (train, val) == (["doc0"], [])
    train, val = domain_split(tmp_path / "c", [False, False], min_val_docs=5)
    assert (train, val) == (["doc0"], ["doc1"])


def test_domain_writer_without_top_up(tmp_path: Path) -> None:
    train, val = domain_split(tmp_path, [False, True, False], min_val_docs=0)
    assert (train, val) == (["doc0", "doc2"], ["doc1"])
