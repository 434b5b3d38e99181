"""Read a prepared shard store: per-domain token memmaps, document index, metadata, manifest.

A store is a folder written by :func:`mixlab.data.prepare.prepare_store`::

    manifest.json          what the store holds (written last: no manifest, no store)
    tokenizer.json         the tokenizer that produced every id
    ingest_summary.json    what ingestion read, kept and dropped (also inside the manifest)
    domains/<name>/{train,val}.tokens.bin   flat uint16/uint32 ids, EOS after each document
    domains/<name>/{train,val}.offsets.npy  int64, n_docs + 1: doc i = tokens[o[i]:o[i+1]]
    domains/<name>/{train,val}.meta.jsonl   one JSON string per document ("" when none)

The manifest records ``format_version``, ``dtype``, ``vocab_size``, ``eos_id``, ``bos_id``,
``tokenizer_hash``, per domain and split the token and document counts and every file's path
and sha256, the split rule and the ingest summary. :attr:`ShardStore.fingerprint` is the first
16 hex digits of the sha256 of the canonical manifest JSON (sorted keys, no spaces): runs record
it and refuse to resume or evaluate against a different store.

Opening a store is cheap: it parses the manifest and checks that every file exists with the
size the counts imply; token files are memory-mapped read-only on first use. :meth:`verify`
re-reads everything and recomputes the checksums.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from mixlab.data.shards import SPLITS
from mixlab.data.tokenizer import load_tokenizer, tokenizer_hash
from mixlab.errors import DataError
from mixlab.files import write_json

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
SUMMARY_NAME = "ingest_summary.json"
_DTYPES: dict[str, np.dtype] = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


def canonical_json(obj: Any) -> str:
    """The one serialisation the fingerprint is computed from."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(manifest).encode("utf-8")).hexdigest()[:16]


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` via a temp file + rename, so it is whole or absent."""
    write_json(root / MANIFEST_NAME, manifest, sort_keys=True)


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


class ShardStore:
    """A prepared store, opened read-only. Domains are sorted by name; splits are train/val."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_NAME
        if not manifest_path.is_file():
            what = "does not exist" if not self.path.exists() else "has no manifest.json"
            raise DataError(
                f"{self.path} is not a prepared mixlab store ({what}); run `mixlab prepare "
                f"--input <data> --out {self.path}` to build it (an interrupted prepare leaves "
                "no store behind — just run it again)"
            )
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(
                f"{manifest_path}: unreadable manifest ({exc}); re-run prepare"
            ) from exc
        if not isinstance(manifest, dict):
            raise DataError(f"{manifest_path}: expected a JSON object; re-run prepare")
        self.manifest: dict[str, Any] = manifest
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(
                f"{manifest_path}: format_version {version!r}, this mixlab reads "
                f"{FORMAT_VERSION}; re-run `mixlab prepare` with this version"
            )
        dtype_name = self._field("dtype", str)
        if dtype_name not in _DTYPES:
            raise DataError(f"{manifest_path}: dtype {dtype_name!r} not one of {sorted(_DTYPES)}")
        self.dtype: np.dtype = _DTYPES[dtype_name]
        self.vocab_size: int = self._field("vocab_size", int)
        self.eos_id: int = self._field("eos_id", int)
        bos = manifest.get("bos_id")
        if bos is not None and not isinstance(bos, int):
            raise DataError(f"{manifest_path}: bos_id {bos!r} is not an integer or null")
        self.bos_id: int | None = bos
        self.tokenizer_hash: str = self._field("tokenizer_hash", str)
        domains = self._field("domains", dict)
        if not domains:
            raise DataError(f"{manifest_path}: the store has no domains; re-run prepare")
        self.domains: tuple[str, ...] = tuple(sorted(domains))
        self._splits: dict[tuple[str, str], dict[str, Any]] = {}
        for domain in self.domains:
            for split in SPLITS:
                entry = domains[domain].get(split) if isinstance(domains[domain], dict) else None
                self._splits[domain, split] = self._check_split(domain, split, entry)
        self.fingerprint: str = manifest_fingerprint(manifest)
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}

    def _field(self, name: str, kind: type) -> Any:
        value = self.manifest.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise DataError(
                f"{self.path / MANIFEST_NAME}: field {name!r} is {value!r}, expected "
                f"{kind.__name__}; the store is damaged — re-run prepare"
            )
        return value

    def _check_split(self, domain: str, split: str, entry: Any) -> dict[str, Any]:
        where = f"{self.path / MANIFEST_NAME}: domains.{domain}.{split}"
        try:
            tokens, docs = int(entry["tokens"]), int(entry["docs"])
            files = {role: entry["files"][role] for role in ("tokens", "offsets", "metadata")}
            paths = {role: self.path / f["path"] for role, f in files.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: malformed entry ({exc!r}); re-run prepare") from exc
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise DataError(f"{where}: missing file(s) {', '.join(missing)}; re-run prepare")
        size = paths["tokens"].stat().st_size
        if size != tokens * self.dtype.itemsize:
            raise DataError(
                f"{paths['tokens']}: {size} bytes, the manifest says {tokens} {self.dtype.name} "
                "tokens; the store is truncated or damaged — re-run prepare"
            )
        return {"tokens": tokens, "docs": docs, "files": files, "paths": paths}

    def _split(self, domain: str, split: str) -> dict[str, Any]:
        try:
            return self._splits[domain, split]
        except KeyError:
            if domain not in self.domains:
                raise DataError(
                    f"domain {domain!r} is not in store {self.path}; its domains are "
                    f"{', '.join(self.domains)}"
                ) from None
            raise DataError(f"split {split!r}: must be one of {', '.join(SPLITS)}") from None

    def tokens(self, domain: str, split: str = "train") -> np.ndarray:
        """All token ids of a domain split: a read-only 1-D memmap (uint16 or uint32)."""
        entry = self._split(domain, split)
        key = (domain, split, "tokens")
        if key not in self._cache:
            n = entry["tokens"]
            # np.memmap cannot map an empty file; an empty split is a plain empty array.
            self._cache[key] = (
                np.memmap(entry["paths"]["tokens"], dtype=self.dtype, mode="r", shape=(n,))
                if n
                else np.zeros(0, dtype=self.dtype)
            )
        return self._cache[key]

    def doc_offsets(self, domain: str, split: str = "train") -> np.ndarray:
        """int64, ``n_docs + 1``: document i is ``tokens[o[i]:o[i+1]]`` including its EOS."""
        entry = self._split(domain, split)
        key = (domain, split, "offsets")
        if key not in self._cache:
            path = entry["paths"]["offsets"]
            try:
                offsets = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: unreadable offsets ({exc}); re-run prepare") from exc
            docs, tokens = entry["docs"], entry["tokens"]
            if offsets.shape != (docs + 1,) or int(offsets[0]) != 0 or int(offsets[-1]) != tokens:
                raise DataError(
                    f"{path}: offsets of shape {offsets.shape} do not describe {docs} documents "
                    f"and {tokens} tokens; the store is damaged — re-run prepare"
                )
            self._cache[key] = offsets
        return self._cache[key]

    def metadata(self, domain: str, split: str = "train") -> list[str]:
        """One metadata string per document (``""`` when none), in document order."""
        path = self._split(domain, split)["paths"]["metadata"]
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    def num_tokens(self, domain: str, split: str = "train") -> int:
        return int(self._split(domain, split)["tokens"])

    def num_docs(self, domain: str, split: str = "train") -> int:
        return int(self._split(domain, split)["docs"])

    def train_tokens_per_domain(self) -> np.ndarray:
        """(K,) int64 training tokens per domain, in :attr:`domains` order."""
        return np.array([self.num_tokens(d, "train") for d in self.domains], dtype=np.int64)

    def tokenizer(self) -> Tokenizer:
        """The tokenizer that produced the ids (checked against the manifest's hash)."""
        tok = load_tokenizer(self.path / TOKENIZER_NAME)
        if tokenizer_hash(tok) != self.tokenizer_hash:
            raise DataError(
                f"{self.path / TOKENIZER_NAME}: hash {tokenizer_hash(tok)} differs from the "
                f"manifest's {self.tokenizer_hash}; the store is damaged — re-run prepare"
            )
        return tok

    def verify(self) -> None:
        """Recompute every checksum and the EOS-after-each-document invariant."""
        problems: list[str] = []
        entries = [self.manifest.get("tokenizer", {})]
        entries += [f for e in self._splits.values() for f in e["files"].values()]
        for entry in entries:
            path = self.path / str(entry.get("path", TOKENIZER_NAME))
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif file_sha256(path) != entry.get("sha256"):
                problems.append(f"{path}: sha256 differs from the manifest")
        if not problems:
            for domain, split in self._splits:
                offsets = self.doc_offsets(domain, split)
                ends = np.asarray(offsets[1:]) - 1
                if ends.size and (
                    np.any(np.diff(offsets) < 1)
                    or np.any(self.tokens(domain, split)[ends] != self.eos_id)
                ):
                    problems.append(f"{domain}/{split}: a document does not end with EOS")
        if problems:
            raise DataError(
                f"store {self.path} failed verification: {'; '.join(problems)}. "
                "Re-run `mixlab prepare --overwrite` to rebuild it"
            )
        logger.info("store %s verified (%d files)", self.path, len(entries))

    def __getstate__(self) -> dict[str, Any]:
        # Memmaps are reopened lazily in the receiving process instead of being copied.
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def __repr__(self) -> str:
        return (
            f"ShardStore({str(self.path)!r}, domains={len(self.domains)}, "
            f"vocab_size={self.vocab_size}, fingerprint={self.fingerprint!r})"
        )
