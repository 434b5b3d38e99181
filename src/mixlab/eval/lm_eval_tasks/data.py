"""Loaders for mixlab's bundled lm-eval tasks: JSONL files next to this one, nothing downloaded.

lm-eval imports this file by path (``custom_dataset: !function data.<name>`` in a task YAML),
so the data is found wherever mixlab is installed. Each loader returns a ``DatasetDict`` with
one ``test`` split.

* ``domain_cloze.jsonl`` (40 items, 10 per domain): an 80-character context cut from a
  document of one domain (``code``, ``numbers``, ``prose`` or ``noise``, the synthetic styles
  of ``tests/conftest.py``) and four 12-character continuations, one from each domain; the
  answer is the one that really follows. Chance is 0.25.
* ``domain_text.jsonl`` (8 documents, 2 per domain, <= 400 characters): whole documents for
  loglikelihood_rolling (word/byte perplexity, bits per byte).

Both were generated once with ``random.Random(7)`` from ``tests/conftest.make_text``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load(name: str) -> Any:
    import datasets

    with open(HERE / name, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def domain_cloze(**kwargs: Any) -> Any:
    """The multiple-choice items of ``domain_cloze.jsonl``."""
    return _load("domain_cloze.jsonl")


def domain_text(**kwargs: Any) -> Any:
    """The documents of ``domain_text.jsonl``."""
    return _load("domain_text.jsonl")
