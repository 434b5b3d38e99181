#!/usr/bin/env python
"""Build a second corpus, never used for tuning, from this machine's ``/usr/share``.

Every mixing method in mixlab was tuned on the demo corpus (Python-world text). A method that
only works there is of no use; this script gives a held-out corpus of other kinds of text, in
other proportions, to check a finding before it is claimed (README "Headroom" reports the
checks made with it). For mixlab developers: it reads the machine's files and writes nothing
that is shipped.

    python scripts/build_heldout_corpus.py --out heldout
    mixlab prepare --input heldout/docs.jsonl --domain-field domain --out heldout/store \\
        --vocab-size 4096 --val-fraction 0.08

Eight domains (on a Debian/Ubuntu system; byte caps in brackets, unequal on purpose):

==================  ===========================================================================
``man_cmds``        English man pages of commands, sections 1 and 8, groff source [2.5 MB]
``man_api``         English man pages of library calls, section 3 (C, Perl, OpenSSL) [1.5 MB]
``man_intl``        German, French and Spanish man pages (translations of the above) [0.8 MB]
``perl_modules``    Perl modules (``.pm``): code and POD documentation [2.0 MB]
``cmake_modules``   CMake modules (``.cmake``) [1.2 MB]
``changelogs``      Debian package changelogs [2.0 MB]
``copyright``       Debian copyright files: licence texts and boilerplate, much repeated [0.6 MB]
``vim_help``        Vim's help files: English prose with markup [1.0 MB]
==================  ===========================================================================

Per domain: candidate files from its globs (``.gz`` files are decompressed), ordered by a hash
of their path (a shuffle, the same on every run), files that are not UTF-8 or under 256
characters skipped, each document clipped to its first 16,384 characters (so the validation
split gets enough documents), exact duplicates (across domains too) skipped, documents kept
until the domain's cap (the last one clipped to fit).
A domain with under 100 KB of text is left out with a warning; fewer than 4 domains is an error.
Output: ``OUT/docs.jsonl`` with records ``{"text", "domain", "source"}`` and
``OUT/summary.json`` (documents and bytes per domain).
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import sys
from pathlib import Path

DOMAINS: dict[str, tuple[int, tuple[str, ...]]] = {
    "man_cmds": (2_500_000, ("man/man1/*", "man/man8/*")),
    "man_api": (1_500_000, ("man/man3/*",)),
    "man_intl": (800_000, ("man/de/man*/*", "man/fr/man*/*", "man/es/man*/*")),
    "perl_modules": (2_000_000, ("perl/[0-9]*.[0-9]*.[0-9]*/**/*.pm", "perl5/**/*.pm")),
    "cmake_modules": (1_200_000, ("cmake-*/**/*.cmake",)),
    "changelogs": (2_000_000, ("doc/*/changelog.Debian.gz", "doc/*/changelog.gz")),
    "copyright": (600_000, ("doc/*/copyright",)),
    "vim_help": (1_000_000, ("vim/vim*/doc/*.txt",)),
}
MAX_DOC_CHARS = 16_384
MIN_DOC_CHARS = 256
MIN_DOMAIN_BYTES = 100_000
MIN_DOMAINS = 4


def read_text(path: Path) -> str | None:
    """The file's text (decompressed if ``.gz``), or None if unreadable or not UTF-8."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def candidates(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Regular files (not symlinks) matching the globs under root, ordered by a hash of their
    path (a shuffle that is the same on every run on the same tree)."""
    found = {
        f
        for pattern in patterns
        for f in glob.glob(str(root / pattern), recursive=True)
        if Path(f).is_file() and not Path(f).is_symlink()
    }
    return [Path(f) for f in sorted(found, key=lambda f: hashlib.sha256(f.encode()).hexdigest())]


def domain_documents(
    root: Path, patterns: tuple[str, ...], cap: int, seen: set[str]
) -> tuple[list[dict[str, str]], int]:
    """(records, bytes of text) of one domain, up to ``cap`` bytes; ``seen`` holds the hashes
    of the documents already taken (by any domain) and gets this domain's."""
    records: list[dict[str, str]] = []
    total = 0
    for path in candidates(root, patterns):
        text = read_text(path)
        if text is None or len(text) < MIN_DOC_CHARS:
            continue
        text = text[:MAX_DOC_CHARS]
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        if total + len(text.encode()) > cap:
            text = text[: cap - total]
        records.append({"text": text, "domain": "", "source": str(path.relative_to(root))})
        total += len(text.encode())
        if total >= cap:
            break
    return records, total


def build(root: Path, out: Path, scale: float = 1.0) -> dict[str, dict[str, int]]:
    """Write ``out/docs.jsonl`` and ``out/summary.json``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    summary: dict[str, dict[str, int]] = {}
    tmp = out / "docs.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        for domain, (cap, patterns) in DOMAINS.items():
            records, total = domain_documents(root, patterns, int(cap * scale), seen)
            if total < MIN_DOMAIN_BYTES * scale:
                print(
                    f"warning: {domain}: {total} bytes of text under {root} from "
                    f"{list(patterns)} (< {int(MIN_DOMAIN_BYTES * scale)}); left out",
                    file=sys.stderr,
                )
                continue
            for record in records:
                record["domain"] = domain
                fh.write(json.dumps(record) + "\n")
            summary[domain] = {"docs": len(records), "bytes": total}
            print(f"{domain:>14s}: {len(records):5d} docs, {total:>9,d} bytes")
    if len(summary) < MIN_DOMAINS:
        tmp.unlink()
        raise SystemExit(
            f"build_heldout_corpus: only {len(summary)} domain(s) found under {root} "
            f"({sorted(summary)}); a comparison needs at least {MIN_DOMAINS}. Is this a "
            "Debian/Ubuntu system with man pages and /usr/share/doc? (--root names another tree)"
        )
    tmp.replace(out / "docs.jsonl")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for docs.jsonl")
    ap.add_argument("--root", type=Path, default=Path("/usr/share"), help="default /usr/share")
    ap.add_argument(
        "--scale", type=float, default=1.0, help="multiply every byte cap (default 1.0)"
    )
    args = ap.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"build_heldout_corpus: --root {args.root} is not a folder")
    if args.scale <= 0:
        raise SystemExit("build_heldout_corpus: --scale must be positive")
    build(args.root, args.out, args.scale)


if __name__ == "__main__":
    main()
