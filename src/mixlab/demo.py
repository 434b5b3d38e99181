"""``mixlab demo``: the whole comparison on the built-in demo corpus, with no data of your own.

1. Unpack (or reuse from the cache) the demo corpus shipped with mixlab: eight clearly
   different kinds of real text, identical on every machine; its fingerprint and per-domain
   sizes are printed (see :mod:`mixlab.data.demo_corpus`).
2. Prepare a shard store from it (train a small byte-level BPE, tokenize, split).
3. Run the demo suite (``mixlab/configs/demo_suite.yaml``) with :mod:`mixlab.comparison`:
   the baselines ``uniform``, ``natural``, ``unimax`` and ``stratified``, then ``odm``,
   ``doremi`` (reference + proxy -> weights -> target),
   ``acodm`` (actor-critic learned on a tiny proxy, frozen on the target) and ``meco``
   (metadata conditioning then cooldown), same model, seed(s) and token budget. Finished runs
   are reused and interrupted ones continue, so an interrupted demo resumes.
4. Print the summary table (mean / token-weighted / worst-domain perplexity, steps-to-target
   against ``uniform``, cost) and write the report (``report.html``, ``report.md``,
   ``results.json``).

Everything lands under one folder (default ``./mixlab-demo``): ``store/``, ``runs/`` (the
suite) and ``report/``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from mixlab.errors import ConfigError

if TYPE_CHECKING:
    from mixlab.comparison import Executor, Suite
    from mixlab.report import Summary

log = logging.getLogger(__name__)

DEMO_VOCAB_SIZE = 4096
QUICK_STEPS = 60


def demo_suite() -> Suite:
    """The suite shipped with mixlab (``mixlab/configs/demo_suite.yaml``)."""
    from mixlab.comparison import load_suite

    with resources.as_file(resources.files("mixlab") / "configs" / "demo_suite.yaml") as path:
        return load_suite(path)


def budget_overrides(steps: int) -> list[str]:
    """``--set`` items that scale the demo's schedule to ``steps`` (10 evals per run)."""
    if steps < 10:
        raise ConfigError(f"--steps: at least 10 steps per run, got {steps}")
    return [
        f"train.max_steps={steps}",
        f"train.warmup_steps={max(1, steps // 20)}",
        f"train.eval_every={max(1, steps // 10)}",
        f"train.log_every={max(1, steps // 30)}",
        f"train.checkpoint_every={max(1, steps // 3)}",
    ]


def prepare_demo_store(root: Path) -> Path:
    """Unpack the corpus (cached) and prepare its shard store under ``root/store`` (reused)."""
    from mixlab.data.demo_corpus import (
        build_demo_corpus,
        demo_corpus_files,
        describe_demo_corpus,
    )
    from mixlab.data.store import ShardStore

    store_dir = root / "store"
    corpus = build_demo_corpus()
    print(describe_demo_corpus(corpus))
    if (store_dir / "manifest.json").exists():
        return ShardStore(store_dir).path
    return prepare_demo_format(demo_corpus_files(corpus), store_dir)


def prepare_demo_format(files: list[Path], store_dir: Path) -> Path:
    """Prepare JSONL files in the demo corpus's format (``text``, ``domain``, ``source``) the
    way the demo does: its vocabulary size and validation share. Returns ``store_dir``."""
    from mixlab.data.prepare import prepare_from_inputs

    prepare_from_inputs(
        files,
        store_dir,
        reader_options={
            "domain_from": "field",
            "domain_field": "domain",
            "metadata_field": "source",
        },
        vocab_size=DEMO_VOCAB_SIZE,
        val_fraction=0.08,
    )
    return store_dir


def run_demo(
    out: str | Path = "mixlab-demo",
    *,
    steps: int | None = None,
    quick: bool = False,
    seeds: Sequence[int] = (0,),
    methods: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    preset: str | None = None,
    jobs: int | None = 2,
    fresh: bool = False,
    overrides: Sequence[str] = (),
    store: str | Path | None = None,
    executor: Executor | None = None,
) -> Summary:
    """Run the demo suite and write its report; returns the summary.

    ``store`` runs the suite on another prepared store instead of the demo corpus's;
    ``overrides`` (``a.b=c``) change every run, e.g. ``model.preset=llama-tiny``;
    ``executor`` runs them elsewhere (:func:`mixlab.comparison.make_executor`).
    """
    from mixlab.comparison import compare

    root = Path(out).resolve()
    suite = demo_suite().select(methods, exclude)  # a bad name fails before the store is built
    store = Path(store).resolve() if store is not None else prepare_demo_store(root)
    sets = [f"data.store={store}"]
    if quick or steps is not None:
        sets += budget_overrides(steps if steps is not None else QUICK_STEPS)
    if quick:
        sets.append("eval.max_tokens_per_domain=8192")
    if preset:
        sets.append(f"model.preset={preset}")
    sets += list(overrides)
    report = root / "report"
    summary = compare(
        suite,
        root / "runs",
        seeds=seeds,
        overrides=sets,
        jobs=jobs,
        fresh=fresh,
        executor=executor,
        report_dir=report,
        title="mixlab demo: mixing methods on the built-in corpus",
    )
    print("\n" + summary.table())
    print(f"\nreport: {report / 'report.html'} (and report.md, results.json, figures/)")
    print(f"runs under {root / 'runs'}; rebuild the report with: mixlab report {root / 'runs'}")
    return summary
