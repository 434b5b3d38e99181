"""Shard writers: stream tokenized documents of one domain into flat files, with checksums.

One (domain, split) is three files under the store, named by a ``prefix`` such as
``domains/code/train``:

* ``<prefix>.tokens.bin`` — all token ids back to back, each document followed by EOS, as raw
  little-endian ``uint16`` (when ``vocab_size <= 65535``) or ``uint32``. Read back with
  ``np.memmap``. Written in chunks of ``chunk_tokens``, so memory stays flat however big the
  domain is.
* ``<prefix>.offsets.npy`` — ``int64``, ``n_docs + 1`` entries: document ``i`` is
  ``tokens[o[i]:o[i+1]]`` including its EOS. Streamed to a scratch file while writing and turned
  into a ``.npy`` at close, so it never sits in memory either.
* ``<prefix>.meta.jsonl`` — one JSON string per line, the document's metadata (``""`` if none).

Every file's sha256 is computed from the bytes as they are written (no second read) and
returned by :meth:`SplitWriter.close` for the manifest.

:class:`DomainWriter` routes one domain's documents to its train and val writers and applies
the small-domain rule of the split (see :func:`in_val_split` and :class:`DomainWriter`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mixlab.errors import DataError

SPLITS = ("train", "val")
UINT16_MAX_VOCAB = 65535
TOKENS_SUFFIX = ".tokens.bin"
OFFSETS_SUFFIX = ".offsets.npy"
METADATA_SUFFIX = ".meta.jsonl"


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (``vocab_size <= 65535``), else ``uint32``."""
    if vocab_size <= 0 or vocab_size > 2**32:
        raise DataError(f"vocab_size={vocab_size}: must be in 1..2**32")
    return np.dtype("<u2") if vocab_size <= UINT16_MAX_VOCAB else np.dtype("<u4")


def in_val_split(text: str | bytes, val_fraction: float) -> bool:
    """The hash rule: a document is held out iff ``sha1(text)[:8] / 2**32 < val_fraction``.

    ``text`` is hashed as UTF-8 (pass ``bytes`` if already encoded). The rule depends on the
    text alone, so the split is the same on every run and exact duplicates
    always land on the same side (no train/val leakage through repeated documents).
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    h = int(hashlib.sha1(data).hexdigest()[:8], 16)
    return h / 2**32 < val_fraction


@dataclass
class SplitInfo:
    """What a closed split writer produced: counts and ``{role: {"path", "sha256"}}``."""

    tokens: int
    docs: int
    files: dict[str, dict[str, str]] = field(default_factory=dict)


class _HashingFile:
    """A binary file opened for writing that hashes what goes through it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 — closed in close()
        self._sha = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        self._fh.write(data)

    def close(self) -> str:
        # On disk before the manifest that vouches for it is written.
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return self._sha.hexdigest()


class SplitWriter:
    """Append documents (token ids + metadata) of one domain split to its three files."""

    def __init__(
        self,
        root: Path,
        prefix: str,
        *,
        vocab_size: int,
        eos_id: int,
        chunk_tokens: int = 1 << 20,
    ) -> None:
        if not 0 <= eos_id < vocab_size:
            raise DataError(f"eos_id={eos_id} is outside the vocabulary (size {vocab_size})")
        self.root = Path(root)
        self.prefix = prefix
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.dtype = token_dtype(vocab_size)
        base = self.root / prefix
        base.parent.mkdir(parents=True, exist_ok=True)
        self._tokens = _HashingFile(base.with_name(base.name + TOKENS_SUFFIX))
        self._meta = _HashingFile(base.with_name(base.name + METADATA_SUFFIX))
        # Offsets go to a raw scratch file first; the .npy header needs the final length.
        self._offsets_raw_path = base.with_name(base.name + ".offsets.tmp")
        self._offsets_raw = open(self._offsets_raw_path, "wb")  # noqa: SIM115
        self._buf = np.empty(chunk_tokens, dtype=self.dtype)
        self._fill = 0
        self._ends: list[int] = []  # document ends not yet flushed to the offsets scratch
        self.num_tokens = 0
        self.num_docs = 0
        self._closed = False

    def add(self, ids: Sequence[int] | np.ndarray, metadata: str = "") -> None:
        """Append one document's ids, then EOS; ``metadata`` goes to the ``.meta.jsonl``."""
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise DataError(f"{self.prefix}: token ids must be 1-D, got shape {arr.shape}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= self.vocab_size):
            raise DataError(
                f"{self.prefix}: token id {int(arr.max())} (or {int(arr.min())}) is outside the "
                f"vocabulary of size {self.vocab_size}; the tokenizer and vocab_size disagree"
            )
        self._append(arr.astype(self.dtype, copy=False))
        self._append(np.array([self.eos_id], dtype=self.dtype))
        self.num_docs += 1
        self._ends.append(self.num_tokens)
        self._meta.write((json.dumps(metadata, ensure_ascii=False) + "\n").encode("utf-8"))
        if len(self._ends) >= 65536:
            self._flush_ends()

    def _append(self, arr: np.ndarray) -> None:
        n = arr.size
        self.num_tokens += n
        if self._fill + n > self._buf.size:
            self._flush_tokens()
            if n >= self._buf.size:  # a document larger than the chunk goes straight out
                self._tokens.write(np.ascontiguousarray(arr).data.cast("B"))
                return
        self._buf[self._fill : self._fill + n] = arr
        self._fill += n

    def _flush_tokens(self) -> None:
        if self._fill:
            self._tokens.write(self._buf[: self._fill].data.cast("B"))
            self._fill = 0

    def _flush_ends(self) -> None:
        if self._ends:
            self._offsets_raw.write(np.asarray(self._ends, dtype="<i8").tobytes())
            self._ends.clear()

    def close(self) -> SplitInfo:
        """Flush, write the offsets ``.npy`` and return counts and checksums."""
        assert not self._closed, "SplitWriter closed twice"
        self._closed = True
        self._flush_tokens()
        self._flush_ends()
        self._offsets_raw.close()
        info = SplitInfo(tokens=self.num_tokens, docs=self.num_docs)
        info.files["tokens"] = self._file_entry(self._tokens.path, self._tokens.close())
        info.files["metadata"] = self._file_entry(self._meta.path, self._meta.close())
        offsets_path = self._offsets_raw_path.with_name(
            self._offsets_raw_path.name.replace(".offsets.tmp", OFFSETS_SUFFIX)
        )
        info.files["offsets"] = self._file_entry(offsets_path, self._write_offsets(offsets_path))
        self._offsets_raw_path.unlink()
        return info

    def abort(self) -> None:
        """Close the files without finishing them (the caller discards the folder)."""
        if not self._closed:
            self._closed = True
            self._offsets_raw.close()
            self._tokens.close()
            self._meta.close()

    def _write_offsets(self, path: Path) -> str:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<i8", "fortran_order": False, "shape": (self.num_docs + 1,)}
        )
        out = _HashingFile(path)
        out.write(header.getvalue())
        out.write(np.zeros(1, dtype="<i8").tobytes())  # offsets start at 0
        with open(self._offsets_raw_path, "rb") as raw:
            while chunk := raw.read(1 << 22):
                out.write(chunk)
        return out.close()

    def _file_entry(self, path: Path, sha256: str) -> dict[str, str]:
        return {"path": path.relative_to(self.root).as_posix(), "sha256": sha256}


class DomainWriter:
    """Both splits of one domain, with the rule that keeps small domains usable.

    Documents go to val by :func:`in_val_split`. On top of that, at :meth:`close`:

    1. a domain whose documents all hashed to val gets its *last* val document moved to train
       (training needs at least one document per domain);
    2. if val then has fewer than ``min_val_docs`` documents and train has more than one, the
       *last* train documents (input order) are moved to val until it has ``min_val_docs`` or
       train is down to one document.

    Moves only ever concern the last documents, so the writer holds back just the newest
    ``min_val_docs`` train documents and the newest val document in memory and streams the
    rest: one pass, flat memory, and the result is fixed by the input order.
    """

    def __init__(
        self, root: Path, prefix: str, *, vocab_size: int, eos_id: int, min_val_docs: int = 1
    ) -> None:
        if min_val_docs < 0:
            raise DataError(f"min_val_docs={min_val_docs}: must be >= 0")
        self.min_val_docs = min_val_docs
        self.writers = {
            split: SplitWriter(root, f"{prefix}/{split}", vocab_size=vocab_size, eos_id=eos_id)
            for split in SPLITS
        }
        self._held_train: deque[tuple[np.ndarray, str]] = deque()
        self._held_val: tuple[np.ndarray, str] | None = None

    def add(self, ids: np.ndarray, metadata: str, *, val: bool) -> None:
        """Route one document to val (``val=True``) or train, holding back the newest ones."""
        doc = (ids, metadata)
        if val:
            if self._held_val is not None:
                self.writers["val"].add(*self._held_val)
            self._held_val = doc
            return
        self._held_train.append(doc)
        if len(self._held_train) > self.min_val_docs:
            self.writers["train"].add(*self._held_train.popleft())

    def close(self) -> dict[str, SplitInfo]:
        train, val = self.writers["train"], self.writers["val"]
        n_train = train.num_docs + len(self._held_train)
        if n_train == 0 and self._held_val is not None:
            train.add(*self._held_val)
            self._held_val, n_train = None, 1
        if self._held_val is not None:
            val.add(*self._held_val)
        wanted = max(0, self.min_val_docs - val.num_docs)
        moves = min(wanted, n_train - 1, len(self._held_train))
        keep = len(self._held_train) - moves
        for i, doc in enumerate(self._held_train):
            (train if i < keep else val).add(*doc)
        self._held_train.clear()
        return {split: w.close() for split, w in self.writers.items()}

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
