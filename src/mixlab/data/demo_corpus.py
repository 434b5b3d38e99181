"""The built-in demo corpus: eight clearly different kinds of real text, shipped with mixlab.

With no data of their own, users still want to see mixlab work on real text. mixlab ships a
fixed corpus of 8 domains inside the package (``mixlab/data/demo_corpus_data/``, one
``<domain>.jsonl.zst`` per domain, ~2.2 MB compressed, ~12.9 MB of text), so the demo's
documents, and therefore its numbers, are the same on every machine:

==================  ===========================================================================
``python_code``     Python standard-library modules (``.py``), tests left out
``python_tests``    test modules (``test_*.py``) of sympy, numpy, networkx, ... and ``stdlib/test``
``type_stubs``      type stubs (``.pyi``): declarations only, no bodies (numpy, torch, tokenizers)
``c_headers``       C/C++ headers (``.h``, ``.hpp``, ``.cuh``) of Python, torch, pyarrow, numpy
``api_docs``        English technical prose: docstrings of non-math libraries (transformers, ...)
``math_docs``       math-heavy docstrings of sympy and mpmath
``python_reference``  the Python language reference (``pydoc_data.topics``), one topic each
``licenses``        license texts of Python distributions and of Python itself
==================  ===========================================================================

The documents are files of permissively licensed Python distributions (and CPython), taken
once by the developer script ``scripts/build_demo_corpus.py``; every record keeps its
``source`` (e.g. ``stdlib/json/decoder.py``) and ``ATTRIBUTION.md`` next to the data names the
distribution, version and license of each source.

:func:`build_demo_corpus` unpacks the shipped data into a folder (default
``$MIXLAB_CACHE/demo_corpus``, else ``$XDG_CACHE_HOME/mixlab/demo_corpus``, else
``~/.cache/mixlab/demo_corpus``): one ``<domain>.jsonl`` per domain with records
``{"text", "domain", "source"}`` and a ``corpus.json`` manifest (a copy of the shipped
``manifest.json``: format version, per-domain docs / text bytes / file bytes / sha256, and the
corpus ``fingerprint``). The fingerprint is

    fingerprint = sha256( concat over domains, in manifest order, of  name || 0x00 || jsonl bytes )

of the uncompressed files, so two folders with the same fingerprint hold byte-identical
documents. Every unpacked file is checked against its sha256 (a mismatch is a
:class:`~mixlab.errors.DataError`: the installation is damaged). The folder is written to a
temporary sibling and renamed into place, and reused as long as its ``corpus.json`` equals the
shipped manifest and every file still has its sha256; ``rebuild`` unpacks it again.

Read the corpus with :func:`mixlab.data.readers.iter_documents` over :func:`demo_corpus_files`
(``domain_from="field"``, ``domain_field="domain"``, ``metadata_field="source"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from mixlab.errors import DataError
from mixlab.files import atomic_folder, remove_stale_temporaries

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

logger = logging.getLogger(__name__)

CORPUS_FORMAT_VERSION = 2
MANIFEST_NAME = "corpus.json"  # in the unpacked folder
SHIPPED_MANIFEST_NAME = "manifest.json"  # in the package data
DATA_DIR_NAME = "demo_corpus_data"  # package data folder, next to this module
DEMO_DOMAINS: tuple[str, ...] = (
    "python_code", "python_tests", "type_stubs", "c_headers",
    "api_docs", "math_docs", "python_reference", "licenses",
)  # fmt: skip


def default_cache_dir() -> Path:
    """``$MIXLAB_CACHE/demo_corpus``, else ``$XDG_CACHE_HOME/mixlab/...``, else ``~/.cache/...``."""
    if os.environ.get("MIXLAB_CACHE"):
        return Path(os.environ["MIXLAB_CACHE"]).expanduser() / "demo_corpus"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mixlab" / "demo_corpus"


def content_fingerprint(domains: Iterable[tuple[str, bytes]]) -> str:
    """sha256 of ``name || 0x00 || jsonl bytes`` over ``(domain name, file bytes)`` in order."""
    total = hashlib.sha256()
    for name, data in domains:
        total.update(name.encode("utf-8") + b"\0" + data)
    return total.hexdigest()


def _shipped_dir() -> Traversable:
    """The package data folder holding ``manifest.json`` and ``<domain>.jsonl.zst``."""
    return resources.files("mixlab.data") / DATA_DIR_NAME


def shipped_manifest() -> dict:
    """The manifest of the corpus shipped with this installation of mixlab."""
    path = _shipped_dir() / SHIPPED_MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"demo corpus: {path} is missing or unreadable ({exc}); reinstall mixlab"
        ) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("domains"), dict):
        raise DataError(f"demo corpus: {path} has no 'domains' mapping; reinstall mixlab")
    return manifest


def _read_manifest(path: Path, *, required: bool = False) -> dict | None:
    """The ``corpus.json`` of ``path``; None (or DataError if ``required``) when unreadable."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("domains"), dict):
        return manifest
    if required:
        raise DataError(f"{path / MANIFEST_NAME}: missing or unreadable; run build_demo_corpus")
    return None


def _is_complete(path: Path, manifest: dict) -> bool:
    """True when ``path`` holds exactly the shipped corpus described by ``manifest``."""
    if _read_manifest(path) != manifest:
        return False
    for name, info in manifest["domains"].items():
        file = path / f"{name}.jsonl"
        if not file.is_file() or file.stat().st_size != info["file_bytes"]:
            return False
        if hashlib.sha256(file.read_bytes()).hexdigest() != info["sha256"]:
            return False
    return True


def _unpack(tmp: Path, manifest: dict) -> None:
    """Decompress every shipped domain into ``tmp``, checking sha256s and the fingerprint."""
    source = _shipped_dir()
    parts = []
    for name, info in manifest["domains"].items():
        packed = source / f"{name}.jsonl.zst"
        try:
            data = zstandard.ZstdDecompressor().decompress(packed.read_bytes())
        except (OSError, zstandard.ZstdError) as exc:
            raise DataError(f"demo corpus: cannot read {packed} ({exc}); reinstall mixlab") from exc
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise DataError(
                f"demo corpus: {packed} does not match the sha256 in {SHIPPED_MANIFEST_NAME}; "
                "the installation is damaged, reinstall mixlab"
            )
        (tmp / f"{name}.jsonl").write_bytes(data)
        parts.append((name, data))
    if content_fingerprint(parts) != manifest["fingerprint"]:
        raise DataError(
            f"demo corpus: the shipped files do not give the fingerprint in "
            f"{SHIPPED_MANIFEST_NAME}; reinstall mixlab"
        )
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _replaceable(path: Path) -> bool:
    """Only ever delete a folder that holds nothing but a (stale) demo corpus."""
    names = [p.name for p in path.iterdir()]
    return all(n == MANIFEST_NAME or n.endswith(".jsonl") for n in names) and (
        not names or MANIFEST_NAME in names
    )


def _sizes_line(manifest: dict) -> str:
    """``fingerprint <sha256>; python_code 2.00 MB, ...`` (one log line)."""
    sizes = ", ".join(f"{n} {i['bytes'] / 1e6:.2f} MB" for n, i in manifest["domains"].items())
    return f"fingerprint {manifest['fingerprint']}; {sizes}"


def build_demo_corpus(out_dir: str | Path | None = None, *, rebuild: bool = False) -> Path:
    """Unpack (or reuse) the shipped demo corpus in ``out_dir`` and return that folder.

    A folder that already holds the shipped corpus (same ``corpus.json``, every sha256 intact)
    is reused unless ``rebuild``. Raises :class:`DataError` when ``out_dir`` holds something
    else or the shipped data is damaged.
    """
    manifest = shipped_manifest()
    out = Path(out_dir).expanduser() if out_dir is not None else default_cache_dir()
    if not rebuild and _is_complete(out, manifest):
        logger.info("demo corpus: reusing %s (%s)", out, _sizes_line(manifest))
        return out
    if out.exists() and not (out.is_dir() and _replaceable(out)):
        raise DataError(
            f"demo corpus: {out} exists and is not a demo corpus folder; pass another out_dir"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, names=[out.name])
    with atomic_folder(out) as tmp:
        _unpack(tmp, manifest)
    logger.info("demo corpus: unpacked %s (%s)", out, _sizes_line(manifest))
    return out


def demo_corpus_files(path: str | Path) -> list[Path]:
    """The domain files (``<domain>.jsonl``) of an unpacked corpus, in manifest order."""
    folder = Path(path)
    manifest = _read_manifest(folder, required=True)
    assert manifest is not None
    return [folder / f"{name}.jsonl" for name in manifest["domains"]]


def describe_demo_corpus(path: str | Path) -> str:
    """A small table of an unpacked corpus (domain, documents, MB of text), then its fingerprint."""
    folder = Path(path)
    manifest = _read_manifest(folder, required=True)
    assert manifest is not None
    rows = [f"{'domain':<18} {'docs':>6} {'MB':>6}  description"]
    for name, info in manifest["domains"].items():
        mb = info["bytes"] / 1e6
        rows.append(f"{name:<18} {info['docs']:>6} {mb:>6.2f}  {info['description']}")
    docs = sum(i["docs"] for i in manifest["domains"].values())
    mb = sum(i["bytes"] for i in manifest["domains"].values()) / 1e6
    rows.append(f"{'total':<18} {docs:>6} {mb:>6.2f}  demo corpus in {folder}")
    rows.append(f"demo corpus fingerprint {manifest.get('fingerprint')}")
    return "\n".join(rows)
