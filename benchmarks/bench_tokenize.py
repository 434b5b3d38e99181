"""Tokenization throughput: ``mixlab prepare`` vs Hugging Face ``datasets.map(batched=True)``.

Both tokenize the same JSONL files (the built-in demo corpus) with the same tokenizer file.

* mixlab: ``prepare_from_inputs`` with ``tokenizer=`` given (no tokenizer training): read
  JSONL, tokenize (Rust ``encode_batch``, both cores), write per-domain shards, checksums,
  manifest.
* HF: ``load_dataset("json")`` (Arrow conversion, fresh cache dir) + ``Dataset.map`` with
  ``tokenizer.encode_batch`` in batches of 1000, for ``num_proc`` 1 and 2; the faster counts.

Runs alternate (mixlab, HF-1, HF-2, mixlab, ...). Prints MB/s of each and
``RESULT mixlab/HF tokenization throughput ratio`` (target >= 1).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _common import median, workdir


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir")
    args = ap.parse_args()

    import datasets
    from tokenizers import Tokenizer

    from mixlab.data.demo_corpus import build_demo_corpus, demo_corpus_files
    from mixlab.data.prepare import prepare_from_inputs

    datasets.disable_progress_bars()
    root = workdir(args.workdir)
    corpus = build_demo_corpus(root / "corpus-tok")
    files = [str(p) for p in demo_corpus_files(corpus)]
    megabytes = sum(Path(f).stat().st_size for f in files) / 1e6
    tok_file = root / "tok-store" / "tokenizer.json"
    if not tok_file.exists():
        prepare_from_inputs(
            files,
            root / "tok-store",
            reader_options={"domain_from": "field", "domain_field": "domain"},
            vocab_size=8192,
            progress=False,
        )
    tok = Tokenizer.from_file(str(tok_file))

    def run_mixlab() -> None:
        out = root / "tok-bench-store"
        shutil.rmtree(out, ignore_errors=True)
        prepare_from_inputs(
            files,
            out,
            reader_options={"domain_from": "field", "domain_field": "domain"},
            tokenizer=tok_file,
            progress=False,
        )

    def run_hf(num_proc: int) -> None:
        cache = root / "hf-cache"
        shutil.rmtree(cache, ignore_errors=True)
        ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(cache))

        def encode(batch: dict) -> dict:
            return {"input_ids": [e.ids for e in tok.encode_batch(batch["text"])]}

        ds.map(
            encode,
            batched=True,
            batch_size=1000,
            num_proc=num_proc if num_proc > 1 else None,
            remove_columns=ds.column_names,
        )

    runs = {
        "mixlab": run_mixlab,
        "hf num_proc=1": lambda: run_hf(1),
        "hf num_proc=2": lambda: run_hf(2),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rates = {k: megabytes / median(v) for k, v in times.items()}
    print(f"{megabytes:.1f} MB of JSONL, {len(files)} files, vocab {tok.get_vocab_size()}")
    for name, rate in rates.items():
        print(f"{name:<14} {rate:6.2f} MB/s  (median of {args.rounds})")
    best_hf = max(v for k, v in rates.items() if k.startswith("hf"))
    print(
        f"RESULT mixlab/HF tokenization throughput ratio = {rates['mixlab'] / best_hf:.2f} "
        "(best HF variant; target >= 1)"
    )


if __name__ == "__main__":
    main()
