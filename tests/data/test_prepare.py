"""prepare_store: tokenizer sample, deterministic split, atomicity, overwrite, summary."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixlab.data import prepare as prepare_module
from mixlab.data.prepare import _water_level, prepare_from_inputs, prepare_store, sample_texts
from mixlab.data.readers import Document
from mixlab.data.shards import in_val_split
from mixlab.data.store import ShardStore
from mixlab.errors import DataError
from tests.conftest import WORDS


def make_docs(domains: dict[str, int], seed: int = 0) -> list[Document]:
    rng = random.Random(seed)
    return [
        Document(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) + f" {name} {i}",
            name,
            f"{name}-{i}",
            f"{name}.jsonl:{i + 1}",
        )
        for name, n in domains.items()
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return make_docs({"a": 150, "b": 100, "c": 3})


@pytest.fixture(scope="module")
def tok_file(tmp_path_factory: pytest.TempPathFactory, docs: list[Document]) -> Path:
    out = tmp_path_factory.mktemp("t") / "store"
    prepare_store(lambda: docs, out, vocab_size=300, progress=False)
    return out / "tokenizer.json"


def decoded(store: ShardStore, domain: str, split: str) -> list[str]:
    tok, tokens, offsets = (
        store.tokenizer(),
        store.tokens(domain, split),
        store.doc_offsets(domain, split),
    )
    return [
        tok.decode(tokens[offsets[i] : offsets[i + 1] - 1].tolist())
        for i in range(len(offsets) - 1)
    ]


def test_split_is_deterministic_disjoint_and_follows_the_hash(
    tmp_path: Path, docs: list[Document], tok_file: Path
) -> None:
    kwargs = dict(tokenizer=tok_file, val_fraction=0.1, progress=False)
    first = prepare_store(lambda: docs, tmp_path / "one", **kwargs)  # type: ignore[arg-type]
    second = prepare_store(lambda: docs, tmp_path / "two", **kwargs)  # type: ignore[arg-type]
    assert first.fingerprint == second.fingerprint
    for domain in ("a", "b"):
        train, val = decoded(first, domain, "train"), decoded(first, domain, "val")
        texts = [d.text for d in docs if d.domain == domain]
        assert sorted(train + val) == sorted(texts)
        assert not set(train) & set(val)
        assert val == [t for t in texts if in_val_split(t, 0.1)]
        assert 0 < len(val) < len(texts) / 4
        assert val == decoded(second, domain, "val")


def test_small_domain_gets_a_val_doc_and_keeps_train(tmp_path: Path, tok_file: Path) -> None:
    docs = make_docs({"big": 40, "tiny": 3, "single": 1})
    # val_fraction 0: no document is held out by hash; min_val_docs alone decides.
    store = prepare_store(
        lambda: docs,
        tmp_path / "s",
        tokenizer=tok_file,
        val_fraction=0.0,
        min_val_docs=2,
        progress=False,
    )
    assert [store.num_docs(d, "val") for d in store.domains] == [2, 0, 2]
    assert [store.num_docs(d, "train") for d in store.domains] == [38, 1, 1]
    tiny = [d.text for d in docs if d.domain == "tiny"]
    assert decoded(store, "tiny", "val") == tiny[1:]  # the last documents, in input order


def test_tokenizer_sample_represents_every_domain() -> None:
    docs = [
        Document(f"{d.domain}: {d.text}", d.domain, "", d.origin)
        for d in make_docs({"huge": 400, "mid": 60, "small": 4})
    ]
    budget = 3000
    texts = sample_texts(iter(docs), budget)
    got: dict[str, int] = {}
    for text in texts:
        domain = text.split(":")[0]
        got[domain] = got.get(domain, 0) + len(text.encode())
    small = [d.text for d in docs if d.domain == "small"]
    assert texts[-len(small) :] == small  # below the fair share: kept whole, in input order
    share = (budget - got["small"]) / 2  # the two large domains split the rest evenly
    assert share - 4 <= got["huge"] <= share and share - 4 <= got["mid"] <= share
    assert texts == sample_texts(iter(docs), budget)
    assert sample_texts(iter(docs), 10**9) == [d.text for d in sorted(docs, key=lambda d: d.domain)]


def test_water_level_by_hand() -> None:
    # sizes 10, 50, 100 under budget 90: 10 kept, the rest share 80 -> level 40.
    assert _water_level([100, 10, 50], 90) == 40
    assert _water_level([30, 30, 30], 60) == 20


def test_crash_leaves_no_store_and_rerun_succeeds(
    dead_pid: int, tmp_path: Path, docs: list[Document], tok_file: Path
) -> None:
    out = tmp_path / "store"
    calls = {"n": 0}

    def crashing() -> Iterator[Document]:
        calls["n"] += 1
        for i, doc in enumerate(docs):
            if i == 120:
                raise RuntimeError("disk on fire")
            yield doc

    with pytest.raises(RuntimeError, match="disk on fire"):
        prepare_store(crashing, out, tokenizer=tok_file, batch_size=16, progress=False)
    assert not out.exists()
    assert os.listdir(tmp_path) == []
    # A run killed without cleanup leaves a temp folder behind; the next run removes it.
    stale = tmp_path / f".store.tmp-{dead_pid}"
    (stale / "domains").mkdir(parents=True)
    store = prepare_store(lambda: docs, out, tokenizer=tok_file, progress=False)
    assert not stale.exists()
    store.verify()
    assert sum(store.num_docs(d, s) for d in store.domains for s in ("train", "val")) == len(docs)


def test_overwrite_rules(tmp_path: Path, docs: list[Document], tok_file: Path) -> None:
    out = tmp_path / "store"
    first = prepare_store(lambda: docs, out, tokenizer=tok_file, progress=False)
    with pytest.raises(DataError, match="--overwrite"):
        prepare_store(lambda: docs[:50], out, tokenizer=tok_file, progress=False)
    assert ShardStore(out).fingerprint == first.fingerprint
    second = prepare_store(
        lambda: docs[:50], out, tokenizer=tok_file, progress=False, overwrite=True
    )
    assert second.domains == ("a",) and second.fingerprint != first.fingerprint
    assert sorted(os.listdir(tmp_path)) == ["store"]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(DataError, match="not a mixlab store"):
        prepare_store(lambda: docs, foreign, tokenizer=tok_file, progress=False, overwrite=True)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_summary_and_tokenizer_are_stored(
    tmp_path: Path, docs: list[Document], tok_file: Path
) -> None:
    seen: list[int] = []

    def documents() -> Iterator[Document]:
        seen.append(0)
        yield from docs

    summary = {"files": 2, "domains": {"a": {"kept": 150}}}
    store = prepare_store(
        documents, tmp_path / "s", tokenizer=tok_file, summary=lambda: summary, progress=False
    )
    assert len(seen) == 1  # a given tokenizer needs no sample pass
    assert json.loads((store.path / "ingest_summary.json").read_text()) == summary
    assert store.manifest["ingest_summary"] == summary
    given = json.loads(tok_file.read_text())
    assert json.loads((store.path / "tokenizer.json").read_text()) == given


def test_parallelism_switch_is_restored(
    tmp_path: Path, docs: list[Document], tok_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    prepare_store(lambda: docs[:20], tmp_path / "s", tokenizer=tok_file, progress=False)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


def test_empty_input_is_an_error(tmp_path: Path, tok_file: Path) -> None:
    with pytest.raises(DataError, match="no documents"):
        prepare_store(lambda: [], tmp_path / "s", tokenizer=tok_file, progress=False)
    assert not (tmp_path / "s").exists()


def test_an_empty_corpus_says_no_documents_before_training_a_tokenizer(
    tmp_path: Path, tok_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tokenizer was trained on an empty corpus")

    monkeypatch.setattr(prepare_module, "train_tokenizer", no_training)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "empty.jsonl").write_bytes(b"")
    (inputs / "blank.jsonl").write_text('{"text": " ", "d": "x"}\n')
    options = {"domain_from": "file"}
    with pytest.raises(DataError, match=rf"no documents.*read from {inputs}.*empty_file=1"):
        prepare_from_inputs([inputs], tmp_path / "s", reader_options=options, progress=False)
    with pytest.raises(DataError, match=rf"no documents.*read from {inputs}"):
        prepare_from_inputs(
            [inputs], tmp_path / "s", reader_options=options, tokenizer=tok_file, progress=False
        )
    with pytest.raises(DataError, match="no documents"):
        prepare_store(lambda: [], tmp_path / "s", vocab_size=300, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["in"]


def test_ingest_summary_counts_problems_per_file_and_reason(tmp_path: Path, tok_file: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = [json.dumps({"text": f"document number {i} here"}) for i in range(30)]
    (inputs / "a.jsonl").write_bytes("\n".join(good).encode() + b'\n{"text": "caf\xe9 latin-1"}\n')
    (inputs / "b.jsonl").write_bytes(b"")
    store, stats = prepare_from_inputs(
        [inputs],
        tmp_path / "s",
        reader_options={"domain_from": "file"},
        tokenizer=tok_file,
        progress=False,
    )
    saved = json.loads((tmp_path / "s" / "ingest_summary.json").read_text(encoding="utf-8"))
    assert saved["problems"] == {"empty_file": 1, "invalid_utf8": 1}
    assert saved["per_file"] == {
        str(inputs / "a.jsonl"): {"invalid_utf8": 1},
        str(inputs / "b.jsonl"): {"empty_file": 1},
    }
    assert saved["totals"]["kept"] == 31 and saved == stats.to_dict()
    assert store.domains == ("a",)


def test_a_store_being_written_by_a_live_process_is_not_touched(
    tmp_path: Path, docs: list[Document], tok_file: Path
) -> None:
    busy = tmp_path / f".store.tmp-{os.getppid()}"  # the parent process is alive
    busy.mkdir()
    with pytest.raises(DataError, match=rf"another `mixlab prepare` \(pid {os.getppid()}\)"):
        prepare_store(lambda: docs, tmp_path / "store", tokenizer=tok_file, progress=False)
    assert busy.is_dir() and not (tmp_path / "store").exists()
