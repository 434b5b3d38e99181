"""mixlab: find and apply the best domain mixture for language-model pretraining.

The data flow, one folder per stage::

    raw documents (jsonl / parquet / txt / HF dataset on disk)
       --mixlab.data (readers, tokenizer, shards)-->  ShardStore (per-domain token memmaps)
       --mixlab.sampling.MixtureSampler(weights)-->    micro-batches (input_ids, labels, domain_id)
       --mixlab.train (HF causal LM)-->                per-domain loss sums / token counts
       --mixlab.mixing policy.update(feedback)-->      new weights --> back to the sampler
    mixlab.eval: per-domain validation loss / perplexity --> metrics.jsonl
    mixlab.comparison (suites of runs, seeds) --> mixlab.report (tables, plots, HTML)

``mixlab.compare(suite_file, out)`` runs a comparison suite and returns its summary (see
:func:`mixlab.comparison.compare`); ``mixlab.run_search(spec_file, out)`` searches a mixture
from a swarm of small repetition-matched proxy runs (see :func:`mixlab.search.run.run_search`).
Nothing runs at import time; heavy modules (torch, transformers) load when first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "compare", "run_search"]


def __getattr__(name: str) -> Any:
    if name == "compare":  # lazy: importing mixlab stays cheap
        from mixlab.comparison import compare

        return compare
    if name == "run_search":
        from mixlab.search.run import run_search

        return run_search
    raise AttributeError(f"module 'mixlab' has no attribute {name!r}")
