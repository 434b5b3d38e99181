"""Corpus readers: stream :class:`Document` records out of raw files, one domain each.

First stage of the mixlab flow (raw documents -> ShardStore). :func:`iter_documents` turns a
list of input paths (files or folders) into a lazy stream of
``Document(text, domain, metadata, origin)``; memory stays flat (one line, one Parquet record
batch or one text file at a time).

Formats, chosen by file name (folders are walked recursively in sorted order; hidden names are
skipped):

* JSON lines: ``.jsonl`` / ``.json`` / ``.ndjson``, optionally ``.gz`` or ``.zst`` compressed
  (The Pile ships ``.jsonl.zst``). One JSON object per line; blank lines are ignored.
  ``origin`` is ``path:line``.
* Parquet: ``.parquet``, read record batch by record batch; ``origin`` is ``path:row`` (1-based).
* Text: ``.txt`` / ``.md`` / ``.rst`` / no extension (optionally ``.gz`` / ``.zst``): one
  document per file whose metadata is its path relative to the input root. A file named
  explicitly is read as text whatever its extension; unknown extensions met while walking a
  folder are skipped (debug log).
* A Hugging Face dataset saved with ``save_to_disk`` (a folder with ``state.json``, or
  ``dataset_dict.json`` for a DatasetDict, whose splits are all read in sorted order;
  ``origin`` is ``path[split]:row``). Needs the ``hf`` extra.

Bytes are decoded as UTF-8 with ``errors="replace"``: an invalid byte becomes U+FFFD instead of
stopping a long ingestion, and the line or text file is counted as ``invalid_utf8`` (kept). A
JSON ``\\ud800``-style escape of a lone surrogate (not encodable as UTF-8) is replaced and
counted the same way.

Domain of a document (``domain_from``):

* ``"field"``: the value at the dotted path ``domain_field`` in the record (``meta.pile_set_name``
  for The Pile). Text files have no fields, so they count as ``missing_domain`` in this mode.
* ``"file"``: the file name without data/compression suffixes (``Github.jsonl.zst`` -> ``Github``).
* ``"folder"``: the name of the file's parent folder.

The raw label then goes through ``domain_map`` (label -> domain) when one is given; labels not
in the map are kept as they are, or dropped and counted as ``unmapped_domain`` when
``strict_map=True``. Finally the name is made filesystem safe: characters outside
``[A-Za-z0-9._-]`` become ``_`` (``"PubMed Central"`` -> ``"PubMed_Central"``).

Bad input (``on_error``): a malformed JSON line or non-object record (``malformed_json``), a
record without a string text (``missing_text``) or without a domain label (``missing_domain``),
and a file that cannot be opened, decompressed or parsed (``bad_file``) are *problems*. With
``"skip"`` (default) they are counted in :class:`IngestStats`, the first 20 are logged with their
``path:line`` and reading goes on (documents already read from a file that breaks half-way are
kept); with ``"fail"`` a :class:`~mixlab.errors.DataError` naming ``path:line`` is raised.
Empty or whitespace-only texts are always dropped and counted per domain as ``empty_text``. Two
more problems are counted (and logged) but never fatal: ``invalid_utf8`` (see above; the
document is kept) and ``empty_file``, a file that yields no record at all (zero bytes, only blank
lines, no rows). Every problem and dropped document is also counted per input file
(:attr:`IngestStats.per_file`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from mixlab.errors import ConfigError, DataError
from mixlab.files import write_json
from mixlab.tables import text_table

logger = logging.getLogger(__name__)

DOMAIN_SOURCES = ("field", "file", "folder")
ERROR_POLICIES = ("skip", "fail")
MAX_LOGGED_PROBLEMS = 20
MAX_EXAMPLES = 50

_COMPRESSIONS = (".gz", ".zst", ".zstd")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_TEXT_SUFFIXES = (".txt", ".md", ".rst", "")
_PARQUET_BATCH_ROWS = 1024
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_INVALID_UTF8 = "invalid UTF-8 replaced by U+FFFD"
MAX_LISTED_FILES = 20


@dataclass(frozen=True)
class Document:
    """One document. ``text`` is never empty; ``metadata`` is ``""`` when there is none."""

    text: str
    domain: str
    metadata: str
    origin: str


def sanitize_domain(label: str) -> str:
    """Filesystem-safe domain name: ``[A-Za-z0-9._-]`` only, never hidden nor ``.``/``..``."""
    name = _UNSAFE_CHARS.sub("_", label.strip())
    # A leading dot would make the domain's shard folder hidden (or be "." / "..").
    return "_" + name[1:] if name.startswith(".") else name


@dataclass
class DomainStats:
    """Counters of one domain: records attributed to it, kept, and dropped by reason."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestStats:
    """What ingestion saw: per-domain counters plus problems not attributable to a domain.

    ``problems`` counts ``malformed_json``, ``missing_text``, ``missing_domain``, ``bad_file``,
    ``unmapped_domain``, ``invalid_utf8`` (document kept) and ``empty_file``; ``examples`` keeps
    the first 50 as ``"origin: reason: detail"``. ``per_file`` counts problems and dropped
    documents by input file and reason (files without any are not listed).
    ``expected_domains`` (filled from ``domain_map``) must all end up non-empty, see
    :meth:`check_nonempty`.
    """

    domains: dict[str, DomainStats] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    expected_domains: set[str] = field(default_factory=set)
    files: int = 0
    quiet: bool = False  # count problems without logging them (e.g. on a second read)

    def _domain(self, domain: str) -> DomainStats:
        return self.domains.setdefault(domain, DomainStats())

    def count_read(self, domain: str) -> None:
        self._domain(domain).read += 1

    def count_kept(self, domain: str) -> None:
        self._domain(domain).kept += 1

    def count_dropped(self, domain: str, reason: str, *, file: str | None = None) -> None:
        dropped = self._domain(domain).dropped
        dropped[reason] = dropped.get(reason, 0) + 1
        self._count_file(file, reason)

    def count_problem(
        self,
        reason: str,
        origin: str,
        detail: str,
        *,
        log: bool = True,
        file: str | None = None,
        outcome: str = "skipped",
    ) -> None:
        """Count a problem (and under its input ``file``); log the first
        ``MAX_LOGGED_PROBLEMS`` of them with their ``outcome``, then only count."""
        self.problems[reason] = self.problems.get(reason, 0) + 1
        self._count_file(file, reason)
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{origin}: {reason}: {detail}")
        if not log or self.quiet:
            return
        n = self.total_problems
        if n <= MAX_LOGGED_PROBLEMS:
            logger.warning("%s: %s: %s (%s)", origin, reason, detail, outcome)
        elif n == MAX_LOGGED_PROBLEMS + 1:
            logger.warning("more than %d problems: counting the rest silently", n - 1)

    def _count_file(self, file: str | None, reason: str) -> None:
        if file is not None:
            counts = self.per_file.setdefault(file, {})
            counts[reason] = counts.get(reason, 0) + 1

    @property
    def total_read(self) -> int:
        return sum(d.read for d in self.domains.values())

    @property
    def total_kept(self) -> int:
        return sum(d.kept for d in self.domains.values())

    @property
    def total_dropped(self) -> int:
        return sum(sum(d.dropped.values()) for d in self.domains.values())

    @property
    def total_problems(self) -> int:
        return sum(self.problems.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (domains sorted by name)."""
        return {
            "files": self.files,
            "domains": {name: asdict(self.domains[name]) for name in sorted(self.domains)},
            "problems": dict(sorted(self.problems.items())),
            "per_file": {
                name: dict(sorted(counts.items())) for name, counts in sorted(self.per_file.items())
            },
            "examples": list(self.examples),
            "expected_domains": sorted(self.expected_domains),
            "totals": {
                "read": self.total_read,
                "kept": self.total_kept,
                "dropped": self.total_dropped,
                "problems": self.total_problems,
            },
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON (temp file + rename, so never half-written)."""
        write_json(path, self.to_dict())

    def format_table(self) -> str:
        """Fixed-width table: one row per domain, one dropped column per reason, a totals row."""
        reasons = sorted({r for d in self.domains.values() for r in d.dropped})
        header = ["domain", "read", "kept", *(f"dropped:{r}" for r in reasons)]
        rows = [
            [name, str(d.read), str(d.kept), *(str(d.dropped.get(r, 0)) for r in reasons)]
            for name, d in sorted(self.domains.items())
        ]
        totals = [sum(d.dropped.get(r, 0) for d in self.domains.values()) for r in reasons]
        total = ["total", str(self.total_read), str(self.total_kept), *map(str, totals)]
        out = [text_table(header, rows, rule="full", footer=[total])]
        if self.problems:
            out.append(f"problems: {_counts(self.problems)}")
            out.extend(f"  {example}" for example in self.examples[:10])
            if len(self.examples) > 10:
                out.append(f"  ... (up to {MAX_EXAMPLES} examples in ingest_summary.json)")
        if self.per_file:
            out.append("problems and dropped documents per input file:")
            files = sorted(self.per_file.items())
            out.extend(f"  {name}: {_counts(c)}" for name, c in files[:MAX_LISTED_FILES])
            if len(files) > MAX_LISTED_FILES:
                more = len(files) - MAX_LISTED_FILES
                out.append(f"  ... ({more} more file(s) in ingest_summary.json)")
        return "\n".join(out)

    def check_any_kept(self, inputs: Sequence[str | Path] = ()) -> None:
        """Raise DataError saying "no documents" (naming ``inputs``) if nothing was kept."""
        if self.total_kept > 0:
            return
        where = f" read from {', '.join(str(p) for p in inputs)}" if inputs else ""
        per_file = "".join(
            f"; {name}: {_counts(c)}" for name, c in sorted(self.per_file.items())[:5]
        )
        raise DataError(
            f"no documents were kept from {self.files} input file(s){where} (records read: "
            f"{self.total_read}; problems: {_counts(self.problems) or 'none'}{per_file}); "
            "check the input paths, text_field and the domain options"
        )

    def check_nonempty(self, required_domains: Sequence[str] | None = None) -> None:
        """Raise DataError if nothing was kept, or a required / mapped domain has no document."""
        self.check_any_kept()
        wanted = set(self.expected_domains)
        wanted.update(sanitize_domain(d) for d in required_domains or ())
        empty = sorted(d for d in wanted if d not in self.domains or self.domains[d].kept == 0)
        if empty:
            raise DataError(
                f"domain(s) {', '.join(empty)} have no documents; present domains: "
                f"{', '.join(sorted(self.domains)) or 'none'}. Check domain_map / the inputs"
            )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def _split_name(name: str) -> tuple[str, str, str]:
    """``"Github.jsonl.zst"`` -> ``("Github", ".jsonl", ".zst")`` (suffixes lower-cased)."""
    lower = name.lower()
    compression = next((c for c in _COMPRESSIONS if lower.endswith(c)), "")
    base = name[: len(name) - len(compression)]
    suffix = Path(base).suffix
    return base[: len(base) - len(suffix)], suffix.lower(), compression


def _file_kind(path: Path) -> str | None:
    """``"jsonl"``, ``"parquet"``, ``"text"`` or None (unknown) from the file name."""
    _, suffix, compression = _split_name(path.name)
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix == ".parquet" and not compression:
        return "parquet"
    return "text" if suffix in _TEXT_SUFFIXES else None


def _is_hf_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _walk(folder: Path) -> Iterator[Path]:
    if _is_hf_dataset(folder):
        yield folder  # read as one unit; its .arrow / .json files are not documents
        return
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk(path)
        elif _file_kind(path) is not None:
            yield path
        else:
            logger.debug("skipping %s: not a known corpus file extension", path)


def _discover(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(file or HF dataset folder, input root) pairs, in a deterministic order."""
    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"input path {str(raw)!r} does not exist; check the data inputs")
        if path.is_dir():
            found.extend((p, path) for p in _walk(path))
        else:
            found.append((path, path.parent))
    return found


def discover_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The files (and HF dataset folders) :func:`iter_documents` would read, in order."""
    return [p for p, _ in _discover([inputs] if isinstance(inputs, str | Path) else inputs)]


@contextlib.contextmanager
def _open_binary(path: Path, compression: str) -> Iterator[io.BufferedIOBase]:
    with open(path, "rb") as raw:
        if compression == ".gz":
            with gzip.GzipFile(fileobj=raw) as gz:
                yield gz
        elif compression:
            # A large window admits files written with `zstd --long`; read_across_frames
            # handles concatenated frames (e.g. shards appended together).
            dctx = zstandard.ZstdDecompressor(max_window_size=2**31)
            with dctx.stream_reader(raw, read_across_frames=True) as reader:
                yield io.BufferedReader(reader)
        else:
            yield raw


def _lookup(record: Mapping[str, Any], dotted: str) -> Any:
    """Value at ``a.b.c`` (a literal key ``"a.b.c"`` wins), or None when absent."""
    if dotted in record:
        return record[dotted]
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class _UnreadableFileError(Exception):
    """A reader-library error (Arrow, datasets) translated for the ``bad_file`` handler."""


_READ_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError, _UnreadableFileError)


@dataclass
class _Reader:
    domain_from: str
    domain_field: str | None
    domain_map: dict[str, str] | None
    strict_map: bool
    text_field: str
    metadata_field: str | None
    on_error: str
    stats: IngestStats
    _unmapped_seen: set[str] = field(default_factory=set)
    _file: str | None = None  # the input file being read, for the per-file counts

    def run(self, files: list[tuple[Path, Path]]) -> Iterator[Document]:
        for path, root in files:
            self.stats.files += 1
            self._file = str(path)
            logger.debug("reading %s", path)
            seen = (self.stats.total_read, self.stats.total_problems)
            try:
                yield from self._read(path, root)
            except _READ_ERRORS as exc:
                self._problem("bad_file", str(path), f"cannot read: {type(exc).__name__}: {exc}")
            if (self.stats.total_read, self.stats.total_problems) == seen:
                self.stats.count_problem(
                    "empty_file", str(path), "no records", file=self._file, outcome="nothing read"
                )
        self._file = None
        logger.info(
            "read %d file(s): %d documents kept, %d dropped, %d problems",
            len(files),
            self.stats.total_kept,
            self.stats.total_dropped,
            self.stats.total_problems,
        )

    def _read(self, path: Path, root: Path) -> Iterator[Document]:
        stem, _, compression = _split_name(path.name)
        if path.is_dir():  # an HF dataset folder: its whole name is the "file" label
            stem = path.name
        label = {"file": stem, "folder": path.parent.name}.get(self.domain_from)
        if path.is_dir():
            yield from self._hf_dataset(path, label)
            return
        kind = _file_kind(path) or "text"  # a file named explicitly is read as text
        if kind == "jsonl":
            yield from self._jsonl(path, compression, label)
        elif kind == "parquet":
            yield from self._parquet(path, label)
        else:
            if label is None:
                detail = "text files have no fields; use domain_from='file' or 'folder'"
                self._problem("missing_domain", str(path), detail)
                return
            with _open_binary(path, compression) as stream:
                data = stream.read()
            if not data:
                return  # counted as empty_file
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                text = data.decode("utf-8-sig", errors="replace")
                self._invalid_utf8(str(path))
            doc = self._emit(text, label, path.relative_to(root).as_posix(), str(path))
            if doc is not None:
                yield doc

    def _jsonl(self, path: Path, compression: str, label: str | None) -> Iterator[Document]:
        with _open_binary(path, compression) as stream:
            for lineno, raw in enumerate(stream, start=1):
                replaced = False
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    line, replaced = raw.decode("utf-8", errors="replace"), True
                    self._invalid_utf8(f"{path}:{lineno}")
                line = line.strip().lstrip("\ufeff")
                if not line:
                    continue
                origin = f"{path}:{lineno}"
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as exc:
                    self._problem("malformed_json", origin, f"invalid JSON ({exc})")
                    continue
                doc = self._record(record, origin, label, utf8_counted=replaced)
                if doc is not None:
                    yield doc

    def _columns(self, available: Sequence[str]) -> list[str] | None:
        """Top-level columns holding the configured fields (None: read all of them)."""
        wanted = [self.text_field, self.domain_field if self.domain_from == "field" else None]
        cols: list[str] = []
        for name in [*wanted, self.metadata_field]:
            if not name:
                continue
            col = name if name in available else name.split(".")[0]
            if col in available and col not in cols:
                cols.append(col)
        return cols or None

    def _parquet(self, path: Path, label: str | None) -> Iterator[Document]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with pq.ParquetFile(path) as pfile:
                cols = self._columns(pfile.schema_arrow.names)
                row = 0
                for batch in pfile.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=cols):
                    for record in batch.to_pylist():
                        row += 1
                        doc = self._record(record, f"{path}:{row}", label)
                        if doc is not None:
                            yield doc
        except pa.ArrowException as exc:
            raise _UnreadableFileError(str(exc)) from exc

    def _hf_dataset(self, path: Path, label: str | None) -> Iterator[Document]:
        try:
            import datasets
        except ImportError as exc:
            raise DataError(
                f"{path} is a Hugging Face dataset saved with save_to_disk; reading it needs "
                "the 'datasets' package: pip install 'mixlab[hf]'"
            ) from exc
        try:
            loaded = datasets.load_from_disk(str(path))
        except (ValueError, KeyError) as exc:  # Arrow / schema errors of a damaged folder
            raise _UnreadableFileError(str(exc)) from exc
        is_dict = isinstance(loaded, datasets.DatasetDict)
        for split in sorted(loaded) if is_dict else [""]:
            dataset = loaded[split] if is_dict else loaded
            cols = self._columns(dataset.column_names)
            if cols is not None:
                dataset = dataset.select_columns(cols)
            where = f"{path}[{split}]" if split else str(path)
            for row, record in enumerate(dataset, start=1):
                doc = self._record(record, f"{where}:{row}", label)
                if doc is not None:
                    yield doc

    def _record(
        self, record: Any, origin: str, label: str | None, *, utf8_counted: bool = False
    ) -> Document | None:
        if not isinstance(record, Mapping):
            found = type(record).__name__
            self._problem("malformed_json", origin, f"expected a JSON object, got {found}")
            return None
        text = _lookup(record, self.text_field)
        if not isinstance(text, str):
            what = "missing" if text is None else f"a {type(text).__name__}, not a string"
            self._problem("missing_text", origin, f"text field {self.text_field!r} is {what}")
            return None
        if self.domain_from == "field":
            assert self.domain_field is not None  # checked in iter_documents
            value = _lookup(record, self.domain_field)
            ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
            label = str(value) if ok and str(value).strip() else None
            if label is None:
                detail = f"domain field {self.domain_field!r} is missing, empty or not a string"
                self._problem("missing_domain", origin, detail)
                return None
        assert label is not None
        metadata = _as_text(_lookup(record, self.metadata_field)) if self.metadata_field else ""
        if _SURROGATES.search(text) or _SURROGATES.search(metadata):
            # JSON escapes such as "\ud800" decode to lone surrogates, which UTF-8 cannot hold.
            text, metadata = _SURROGATES.sub("\ufffd", text), _SURROGATES.sub("\ufffd", metadata)
            if not utf8_counted:
                self._invalid_utf8(origin)
        return self._emit(text, label, metadata, origin)

    def _emit(self, text: str, label: str, metadata: str, origin: str) -> Document | None:
        if self.domain_map is not None:
            mapped = self.domain_map.get(label, self.domain_map.get(sanitize_domain(label)))
            if mapped is None and self.strict_map:
                self.stats.count_problem(
                    "unmapped_domain", origin, f"label {label!r}", log=False, file=self._file
                )
                if label not in self._unmapped_seen:
                    self._unmapped_seen.add(label)
                    logger.info("dropping domain label %r: not in domain_map", label)
                return None
            label = mapped if mapped is not None else label
        domain = sanitize_domain(label)
        if not domain:
            self._problem("missing_domain", origin, f"domain label {label!r} is empty")
            return None
        self.stats.count_read(domain)
        if not text.strip():
            self.stats.count_dropped(domain, "empty_text", file=self._file)
            return None
        self.stats.count_kept(domain)
        return Document(text=text, domain=domain, metadata=metadata, origin=origin)

    def _problem(self, reason: str, origin: str, detail: str) -> None:
        if self.on_error == "fail":
            what = "files" if reason == "bad_file" else "lines"
            raise DataError(
                f"{origin}: {reason}: {detail} (use --on-error skip to skip such {what})"
            )
        self.stats.count_problem(reason, origin, detail, file=self._file)

    def _invalid_utf8(self, origin: str) -> None:
        """Count a line or file whose invalid UTF-8 became U+FFFD (never fatal: it is kept)."""
        self.stats.count_problem(
            "invalid_utf8", origin, _INVALID_UTF8, file=self._file, outcome="kept"
        )


def iter_documents(
    inputs: Sequence[str | Path],
    *,
    domain_from: str = "field",
    domain_field: str | None = None,
    domain_map: Mapping[str, str] | None = None,
    strict_map: bool = False,
    text_field: str = "text",
    metadata_field: str | None = None,
    on_error: str = "skip",
    stats: IngestStats | None = None,
) -> Iterator[Document]:
    """Stream the documents of ``inputs`` (files or folders); see the module docstring.

    Options and input paths are validated now (ConfigError), the files are read lazily as the
    iterator is consumed. Pass ``stats`` to get the counters back.
    """
    if domain_from not in DOMAIN_SOURCES:
        raise ConfigError(f"domain_from={domain_from!r}: expected one of {DOMAIN_SOURCES}")
    if domain_from == "field" and not domain_field:
        raise ConfigError(
            "domain_from='field' needs domain_field (a dotted path such as "
            "'meta.pile_set_name'); or use domain_from='file' / 'folder'"
        )
    if on_error not in ERROR_POLICIES:
        raise ConfigError(f"on_error={on_error!r}: expected one of {ERROR_POLICIES}")
    if not text_field:
        raise ConfigError("text_field must be a non-empty (dotted) field name")
    if strict_map and domain_map is None:
        raise ConfigError("strict_map=True needs a domain_map")
    mapping: dict[str, str] | None = None
    if domain_map is not None:
        mapping = {}
        for raw_label, target in domain_map.items():
            if not isinstance(target, str) or not sanitize_domain(target):
                raise ConfigError(f"domain_map[{raw_label!r}] = {target!r}: need a domain name")
            mapping[str(raw_label)] = sanitize_domain(target)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if not inputs:
        raise ConfigError("no input paths given")
    files = _discover(inputs)
    stats = stats if stats is not None else IngestStats()
    if mapping:
        stats.expected_domains.update(mapping.values())
    reader = _Reader(
        domain_from=domain_from,
        domain_field=domain_field,
        domain_map=mapping,
        strict_map=strict_map,
        text_field=text_field,
        metadata_field=metadata_field,
        on_error=on_error,
        stats=stats,
    )
    return reader.run(files)
