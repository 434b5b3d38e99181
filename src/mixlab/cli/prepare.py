"""``mixlab prepare``: read a corpus, train or load a tokenizer, write per-domain token shards.

The work is :func:`mixlab.data.prepare.prepare_from_inputs`; this module parses the options
(``--domain-map`` as a JSON file or inline JSON) and prints the per-domain ingest summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mixlab.cli.options import add_command
from mixlab.errors import ConfigError

SUMMARY = "ingest a corpus, train/load a tokenizer, write per-domain token shards"
DESCRIPTION = """\
Read documents (JSONL incl. .gz/.zst, Parquet, text files/folders, HF datasets saved with
save_to_disk), assign each a domain, tokenize with both cores and write a shard store:
per-domain uint16/uint32 token memmaps, document index, metadata, manifest with checksums,
and a deterministic train/validation split. Malformed lines are reported with file and line
and skipped (or fatal with --on-error fail); a per-domain summary is printed and saved as
ingest_summary.json.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(sub, "prepare", SUMMARY, DESCRIPTION, show_defaults=True)
    p.add_argument("--input", "-i", nargs="+", required=True, help="files or folders to read")
    p.add_argument("--out", "-o", required=True, help="folder of the shard store to write")
    p.add_argument(
        "--domain-field", help="dotted field holding the domain, e.g. meta.pile_set_name"
    )
    p.add_argument(
        "--domain-from",
        choices=("field", "file", "folder"),
        help="where the domain comes from (default: field if --domain-field is given, else file)",
    )
    p.add_argument(
        "--domain-map",
        help="JSON file or inline JSON mapping raw domain labels to domain names",
    )
    p.add_argument("--text-field", default="text", help="dotted field holding the text")
    p.add_argument("--metadata-field", help="dotted field kept per document, e.g. url or source")
    p.add_argument(
        "--on-error",
        choices=("skip", "fail"),
        default="skip",
        help="malformed lines: skip and count, or stop",
    )
    p.add_argument(
        "--tokenizer", help="tokenizer.json or local HF tokenizer folder (default: train one)"
    )
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of a trained tokenizer")
    p.add_argument(
        "--tokenizer-sample-mb",
        type=float,
        default=20.0,
        help="MB of text sampled across domains to train the tokenizer",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.05,
        help="share of documents (by content hash) held out for validation",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prepare)
    return p


def _domain_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    path = Path(text)
    try:
        raw = json.loads(path.read_text(encoding="utf-8") if path.is_file() else text)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"--domain-map: not a JSON file or JSON mapping: {text!r} ({exc})"
        ) from exc
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ConfigError("--domain-map: expected a JSON object mapping label -> domain name")
    return raw


def cmd_prepare(args: argparse.Namespace) -> int:
    from mixlab.data.prepare import prepare_from_inputs

    domain_from = args.domain_from or ("field" if args.domain_field else "file")
    options = dict(
        domain_from=domain_from,
        domain_field=args.domain_field,
        domain_map=_domain_map(args.domain_map),
        text_field=args.text_field,
        metadata_field=args.metadata_field,
        on_error=args.on_error,
    )
    store, stats = prepare_from_inputs(
        args.input,
        args.out,
        reader_options=options,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        tokenizer_sample_bytes=int(args.tokenizer_sample_mb * 1e6),
        val_fraction=args.val_fraction,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(stats.format_table())
    print(
        f"\nwrote {store.path}: {len(store.domains)} domains, vocab {store.vocab_size}, "
        f"{int(store.train_tokens_per_domain().sum()):,} train tokens"
    )
    return 0
