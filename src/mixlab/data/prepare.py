"""Prepare a shard store: documents -> tokenizer -> per-domain token shards -> manifest.

:func:`prepare_store` makes two passes over ``documents()`` (a zero-argument callable that
returns a fresh iterable of :class:`~mixlab.data.readers.Document`):

1. **Tokenizer sample** (only when no ``tokenizer`` is given). Every domain contributes the
   *beginning* of its stream, with a fair (water-filling) split of ``tokenizer_sample_bytes``:
   while the budget is not exhausted everything is kept; once it is, the level ``L`` with
   ``Σ_d min(bytes_d, L) = budget`` is recomputed and larger domains are cut back to ``L``
   bytes. A small domain thus keeps all of its text and no domain is left out, memory never
   exceeds the budget (plus one document), and the sample is fixed by the input order.
   A byte-level BPE of ``vocab_size`` ids is trained on it (:mod:`mixlab.data.tokenizer`).
2. **Tokenization.** Documents are encoded ``batch_size`` at a time with
   ``Tokenizer.encode_batch_fast`` — the Rust side spreads a batch over all cores (rayon), so
   ``TOKENIZERS_PARALLELISM`` is forced on for the duration if it was switched off. Each
   document goes to its domain's train or val shard by the content-hash rule of
   :func:`~mixlab.data.shards.in_val_split` (``val_fraction``), with the small-domain rule of
   :class:`~mixlab.data.shards.DomainWriter`: at least ``min_val_docs`` val documents per
   domain when the domain has more than that, and always at least one train document.

**Atomicity.** Everything is written into ``<out.parent>/.<out.name>.tmp-<pid>``
(:func:`mixlab.files.atomic_folder`); the manifest is written last and the folder is then
renamed to ``out``. A crash or an exception leaves no store at ``out`` (the temp folder is
removed on the way out, and leftovers of killed runs are removed by the next run,
:func:`mixlab.files.remove_stale_temporaries`), so re-running simply starts over. An existing
store at ``out`` is only replaced with ``overwrite=True``; a folder at ``out`` that is not a
store is never touched.

**Nothing silent.** A corpus without a single document fails with a :class:`DataError` that
says "no documents" and names the inputs, before any tokenizer is trained; the reader's
per-file and per-reason counts (``invalid_utf8``, ``empty_file``, ``malformed_json``, ...) go
to the printed summary and ``ingest_summary.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer
from tqdm import tqdm

from mixlab.data.readers import Document, IngestStats, iter_documents
from mixlab.data.shards import DomainWriter, in_val_split, token_dtype
from mixlab.data.store import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SUMMARY_NAME,
    TOKENIZER_NAME,
    ShardStore,
    file_sha256,
    manifest_fingerprint,
    write_manifest,
)
from mixlab.data.tokenizer import (
    bos_id,
    eos_id,
    load_tokenizer,
    tokenizer_hash,
    train_tokenizer,
    vocab_size_of,
)
from mixlab.errors import ConfigError, DataError
from mixlab.files import atomic_folder, remove_stale_temporaries, temporary_owner, write_json

logger = logging.getLogger(__name__)

SPLIT_RULE = "val iff int(sha1(utf8(text)).hexdigest()[:8], 16) / 2**32 < val_fraction"
_FALSE_VALUES = {"", "0", "f", "false", "n", "no", "off"}


def prepare_store(
    documents: Callable[[], Iterable[Document]],
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    vocab_size: int = 8192,
    tokenizer_sample_bytes: int = 20_000_000,
    val_fraction: float = 0.05,
    min_val_docs: int = 1,
    batch_size: int = 256,
    progress: bool = True,
    summary: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    overwrite: bool = False,
) -> ShardStore:
    """Build the shard store at ``out`` and return it opened.

    ``tokenizer``: a ``tokenizer.json`` or local HF tokenizer folder; ``None`` trains a
    byte-level BPE of ``vocab_size`` ids on ``tokenizer_sample_bytes`` of sampled text.
    ``summary``: the ingest summary (e.g. ``IngestStats.to_dict``) saved as
    ``ingest_summary.json`` and in the manifest; a callable is called after the tokenization
    pass, so reader statistics gathered during that pass are complete.
    """
    out = Path(out)
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}: must be in [0, 1)")
    if min_val_docs < 0:
        raise ConfigError(f"min_val_docs={min_val_docs}: must be >= 0")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be >= 1")
    if tokenizer is None and tokenizer_sample_bytes < 1:
        raise ConfigError(f"tokenizer_sample_bytes={tokenizer_sample_bytes}: must be >= 1")
    _check_out(out, overwrite)
    _remove_leftovers(out)

    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    else:
        texts = sample_texts(documents(), tokenizer_sample_bytes, progress=progress)
        if not texts:
            raise DataError("no documents to prepare: the input produced no documents")
        logger.info("training a %d-id tokenizer on %d sampled texts", vocab_size, len(texts))
        tok = train_tokenizer(texts, vocab_size, show_progress=progress)
        del texts

    with atomic_folder(out) as tmp:
        manifest = _write_store(
            tmp, tok, documents(), val_fraction, min_val_docs, batch_size, progress, summary
        )
        _check_out(out, overwrite)  # again: another run may have finished meanwhile
    logger.info("wrote store %s (fingerprint %s)", out, manifest_fingerprint(manifest))
    return ShardStore(out)


def _write_store(
    root: Path,
    tok: Tokenizer,
    docs: Iterable[Document],
    val_fraction: float,
    min_val_docs: int,
    batch_size: int,
    progress: bool,
    summary: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """Tokenize ``docs`` into ``root`` and write the manifest; returns the manifest."""
    vocab, eos = vocab_size_of(tok), eos_id(tok)
    dtype = token_dtype(vocab)
    tok.save(str(root / TOKENIZER_NAME))
    writers: dict[str, DomainWriter] = {}
    used_dirs: set[str] = set()

    def writer_for(domain: str) -> DomainWriter:
        if domain not in writers:
            folder = _domain_folder(domain, used_dirs)
            writers[domain] = DomainWriter(
                root, f"domains/{folder}", vocab_size=vocab, eos_id=eos, min_val_docs=min_val_docs
            )
        return writers[domain]

    bar = tqdm(desc="tokenizing", unit="doc", file=sys.stderr, disable=not progress)
    n_bytes = 0
    try:
        with _rayon_enabled():
            for batch, encodings in _encoded_batches(tok, docs, batch_size):
                for doc, enc in zip(batch, encodings, strict=True):
                    data = doc.text.encode("utf-8")
                    val = in_val_split(data, val_fraction)
                    writer_for(doc.domain).add(
                        np.array(enc.ids, dtype=dtype), doc.metadata, val=val
                    )
                    n_bytes += len(data)
                bar.update(len(batch))
                bar.set_postfix_str(f"{n_bytes / 1e6:,.1f} MB", refresh=False)
        splits = {domain: writers[domain].close() for domain in sorted(writers)}
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
    if not splits:
        raise DataError("no documents to prepare: the input produced no documents")
    for domain, parts in splits.items():
        if parts["train"].tokens < 2:
            raise DataError(
                f"domain {domain!r}: {parts['train'].tokens} train tokens; a domain needs at "
                "least one non-empty training document"
            )
        if parts["val"].docs == 0:
            logger.warning("domain %r has no validation documents (too few documents)", domain)
        logger.info(
            "%s: train %d docs / %d tokens, val %d docs / %d tokens",
            domain,
            parts["train"].docs,
            parts["train"].tokens,
            parts["val"].docs,
            parts["val"].tokens,
        )
    ingest = _resolve_summary(summary)
    write_json(root / SUMMARY_NAME, ingest)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "vocab_size": vocab,
        "eos_id": eos,
        "bos_id": bos_id(tok),
        # Hash what ShardStore.tokenizer() will load, so the two always agree.
        "tokenizer_hash": tokenizer_hash(load_tokenizer(root / TOKENIZER_NAME)),
        "tokenizer": {"path": TOKENIZER_NAME, "sha256": file_sha256(root / TOKENIZER_NAME)},
        "split": {"rule": SPLIT_RULE, "val_fraction": val_fraction, "min_val_docs": min_val_docs},
        "domains": {
            domain: {split: vars(info) for split, info in parts.items()}
            for domain, parts in splits.items()
        },
        "ingest_summary": ingest,
    }
    write_manifest(root, manifest)  # last: its presence means the store is complete
    return manifest


def prepare_from_inputs(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    reader_options: Mapping[str, Any],
    **prepare_options: Any,
) -> tuple[ShardStore, IngestStats]:
    """Read files with :func:`iter_documents` and prepare a store from them.

    ``reader_options`` go to ``iter_documents`` (validated before any work starts),
    ``prepare_options`` to :func:`prepare_store`. The corpus is read once for the tokenizer
    sample (when a tokenizer is trained) and once for tokenization; problems are logged on
    the first read only, and the returned statistics (also saved as ``ingest_summary.json``)
    are those of the full tokenization read. A read that yields no document at all raises
    DataError ("no documents ... read from <inputs>") at its end, i.e. before a tokenizer is
    trained or a store written.
    """
    iter_documents(inputs, **reader_options)
    passes: list[IngestStats] = []

    def documents() -> Iterator[Document]:
        stats = IngestStats(quiet=bool(passes))
        passes.append(stats)
        yield from iter_documents(inputs, stats=stats, **reader_options)
        stats.check_any_kept(inputs)

    store = prepare_store(documents, out, summary=lambda: passes[-1].to_dict(), **prepare_options)
    return store, passes[-1]


def sample_texts(
    docs: Iterable[Document], budget_bytes: int, *, progress: bool = False
) -> list[str]:
    """Up to ``budget_bytes`` (UTF-8) of text, a fair share from the start of every domain."""
    held: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    level = float("inf")  # per-domain cap; only ever decreases once the budget binds
    with tqdm(desc="tokenizer sample", unit="doc", file=sys.stderr, disable=not progress) as bar:
        for doc in docs:
            bar.update()
            size = sizes.setdefault(doc.domain, 0)
            held.setdefault(doc.domain, [])
            if size >= level:
                continue
            data = doc.text.encode("utf-8")
            held[doc.domain].append(doc.text)
            sizes[doc.domain] = size + len(data)
            if sum(sizes.values()) > budget_bytes:
                level = _water_level(list(sizes.values()), budget_bytes)
                for domain in sizes:
                    if sizes[domain] > level:
                        sizes[domain] = _cut(held[domain], sizes[domain], int(level))
    return [text for domain in sorted(held) for text in held[domain]]


def _water_level(sizes: list[int], budget: int) -> float:
    """The cap ``L`` with ``Σ min(size, L) == budget`` (assumes ``Σ size > budget``)."""
    remaining = float(budget)
    ordered = sorted(sizes)
    for i, size in enumerate(ordered):
        share = remaining / (len(ordered) - i)
        if size > share:
            return share
        remaining -= size
    raise AssertionError("water level asked for sizes that fit the budget")


def _cut(texts: list[str], size: int, cap: int) -> int:
    """Drop/trim texts from the end until their UTF-8 size is at most ``cap``; new size."""
    while texts and size > cap:
        last = texts.pop().encode("utf-8")
        size -= len(last)
        keep = cap - size
        if keep > 0:
            # Cutting mid-character would leave a broken byte; "ignore" drops it.
            piece = last[:keep].decode("utf-8", errors="ignore")
            texts.append(piece)
            size += len(piece.encode("utf-8"))
    return size


def _batches(docs: Iterable[Document], batch_size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    for doc in docs:
        if not doc.text or not doc.domain:
            raise DataError(f"{doc.origin}: document with empty text or domain")
        batch.append(doc)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encoded_batches(
    tok: Tokenizer, docs: Iterable[Document], batch_size: int
) -> Iterator[tuple[list[Document], list[Encoding]]]:
    """``(batch, encodings)`` in input order, encoding one batch ahead in a helper thread.

    ``encode_batch_fast`` releases the GIL, so while the Rust side encodes batch i+1 on all
    cores, this thread reads documents and writes batch i: the cores are not left idle during
    the Python part of the work.
    """
    # encode_batch_fast (tokenizers >= 0.20) skips the character offsets we do not need.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mixlab-encode") as pool:
        pending: tuple[list[Document], Future[list[Encoding]]] | None = None
        for batch in _batches(docs, batch_size):
            texts = [d.text for d in batch]
            future = pool.submit(encode, texts, add_special_tokens=False)
            if pending is not None:
                yield pending[0], pending[1].result()
            pending = (batch, future)
        if pending is not None:
            yield pending[0], pending[1].result()


@contextlib.contextmanager
def _rayon_enabled() -> Iterator[None]:
    """Let ``encode_batch`` use every core even if ``TOKENIZERS_PARALLELISM`` says no."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    if old is not None and old.strip().lower() in _FALSE_VALUES:
        logger.info("TOKENIZERS_PARALLELISM=%s: enabling it while tokenizing the corpus", old)
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if old is not None:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _domain_folder(domain: str, used: set[str]) -> str:
    """A folder name for ``domain``: its safe name, disambiguated on case-insensitive disks."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", domain).lstrip(".") or "domain"
    if safe != domain or safe.lower() in used:
        safe = f"{safe}-{hashlib.sha1(domain.encode('utf-8')).hexdigest()[:8]}"
    used.add(safe.lower())
    return safe


def _resolve_summary(
    summary: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None,
) -> dict[str, Any]:
    value = summary() if callable(summary) else summary
    result = dict(value or {})
    try:
        json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"summary: the ingest summary is not JSON-serialisable ({exc})") from exc
    return result


def _is_store(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if _is_store(out):
        if not overwrite:
            raise DataError(
                f"{out} already holds a prepared store; pass --overwrite (overwrite=True) to "
                "replace it, or choose another --out"
            )
    elif not out.is_dir() or any(out.iterdir()):
        raise DataError(
            f"{out} exists and is not a mixlab store; refusing to replace it — choose another "
            "--out or remove it yourself"
        )


def _remove_leftovers(out: Path) -> None:
    """Remove temp/old folders of earlier runs for ``out`` whose process is gone; refuse to
    start while another process is writing ``out``."""
    if not out.parent.is_dir():
        return
    remove_stale_temporaries(out.parent, names=[out.name])
    for name in sorted(os.listdir(out.parent)):
        owner = temporary_owner(name)
        if owner is not None and owner[0] == out.name:  # still here: its writer is alive
            raise DataError(
                f"{out.parent / name}: another `mixlab prepare` (pid {owner[1]}) is writing "
                f"{out}; wait for it, or delete that folder if the process is not a prepare"
            )
