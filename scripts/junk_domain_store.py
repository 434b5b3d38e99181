"""Build the demo corpus plus one *unlearnable* domain: a stress test for mixing policies.

Real corpora often hold a domain that no amount of training improves much: encoded blobs,
hashes, minified data. Uniform sampling spends 1/K of every step on it; a good mixing policy
should notice and move that budget to domains that still learn. On the demo corpus alone there
is almost nothing for a policy to gain (README, "AC-ODM without collapse": B6), so this store
gives the policies something real to find.

The extra domain ``blobs`` is 500 documents of random bytes in base64 (76-character lines, as
in MIME), about 1 MB of text (~0.8M tokens with the store's 4096-token BPE). Everything else is
the demo corpus, prepared as ``mixlab demo`` prepares it. Seeded: the same store on every machine.

    PYTHONPATH=src python scripts/junk_domain_store.py --out /tmp/junk     # ~5 s
    mixlab compare configs/suites/acodm.yaml --set data.store=/tmp/junk/store --out R --jobs 2
"""

from __future__ import annotations

import argparse
import base64
import json
import random
from pathlib import Path

from mixlab.data.demo_corpus import build_demo_corpus, demo_corpus_files
from mixlab.demo import prepare_demo_format


def write_blobs(path: Path, docs: int = 500, seed: int = 7) -> None:
    """``docs`` documents of 600-2400 random bytes each, base64-encoded, one JSON per line."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(docs):
            n = rng.randint(600, 2400)
            raw = bytes(rng.getrandbits(8) for _ in range(n))
            text = base64.b64encode(raw).decode()
            lines = "\n".join(text[j : j + 76] for j in range(0, len(text), 76))
            f.write(json.dumps({"text": lines, "domain": "blobs", "source": f"blob{i}.b64"}))
            f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for blobs.jsonl and store/")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    blobs = args.out / "blobs.jsonl"
    write_blobs(blobs)
    files = [*demo_corpus_files(build_demo_corpus()), blobs.resolve()]
    prepare_demo_format(files, args.out / "store")
    print(f"store: {args.out / 'store'}")


if __name__ == "__main__":
    main()
