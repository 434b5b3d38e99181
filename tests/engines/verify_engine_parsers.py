"""Read mixlab's engine exports back with each engine's *own* code, where it can be imported.

    PYTHONPATH=src python tests/engines/verify_engine_parsers.py

Not a pytest module (the default environment cannot hold these engines: OLMo-core, mosaic
streaming, nanotron and Levanter pin or pull packages that conflict with mixlab's torch /
numpy / transformers). Run it in a separate venv that has them; every engine it cannot import
is reported as ``not importable`` and skipped, every check that runs must pass (exit 1
otherwise). Each check exports an adaptive run (three regimes) with ``export_mix``, lets the
engine parse the files, and simulates the engine's sampling to compare achieved shares with
mixlab's plan:

* megatron   ``get_blend_from_list`` + ``BlendedMegatronDatasetBuilder`` on IndexedDatasets;
* olmo-core  ``SourceMixtureList.from_yaml`` / ``SourceMixtureDatasetConfig.from_yaml`` and
             ``build`` on raw token files (tokens selected per source);
* nanotron   ``get_config_from_dict(..., DatasetStageArgs)`` per stage (dacite, strict);
* levanter   ``draccus.decode(LMMixtureDatasetConfig, ...)`` and ``MixtureDataset`` over
             in-memory datasets (sources of the first 2048 x k sequences of each stage);
* mosaic     ``Stream(**cfg)`` + ``StreamingDataset`` over MDS shards written by ``MDSWriter``.

nanotron's config package imports flash_attn/triton and streaming imports torchvision at import
time; on a CPU machine without them :func:`stub_modules` stands in for those modules (nothing
of them is called by the parsers).
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import tempfile
import traceback
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Run as a script: this folder is sys.path[0] (a site-packages `tests` may shadow ours).
from conftest import DOMAINS, drifting_weights, write_run  # type: ignore[import-not-found]

from mixlab.engines import export_mix

BATCH, SEQ = 8, 64


def stub_modules(*names: str) -> None:
    """Import hook: ``names`` (and submodules) import as inert stand-ins."""

    class Stub(types.ModuleType):
        def __getattr__(self, attr: str):
            if attr == "__version__":
                return "99.0.0"
            if attr.startswith("__"):
                raise AttributeError(attr)
            if attr[:1].isupper():
                return type(attr, (), {})
            return Stub(f"{self.__name__}.{attr}")

        def __call__(self, *args, **kwargs):
            return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else self

    class Finder:
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in names:
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = Stub(spec.name)
            module.__path__ = []
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def _export(work: Path, engine: str, run: Path, prefixes: dict | None = None, **kw):
    pre = None
    if prefixes is not None:
        pre = work / f"{engine}_prefixes.json"
        pre.write_text(json.dumps(prefixes))
    return export_mix(
        run,
        [engine],
        work / "out",
        prefixes=pre,
        phases=3,
        global_batch_size=BATCH,
        seq_len=SEQ,
        force=True,
        **{"budget_tokens": 1536 * BATCH * SEQ, **kw},
    )


def _close(got: np.ndarray, want: np.ndarray, atol: float, what: str) -> str:
    gap = float(np.abs(got / got.sum() - want).max())
    if gap > atol:
        raise AssertionError(f"{what}: achieved {got / got.sum()} vs {want} (gap {gap:.2e})")
    return f"{what} within {gap:.1e}"


def check_megatron(work: Path, run: Path) -> str:
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from megatron.core.datasets.utils import get_blend_from_list

    prefixes = {d: str(work / "megatron_data" / d) for d in DOMAINS}
    (work / "megatron_data").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for p in prefixes.values():
        builder = IndexedDatasetBuilder(f"{p}.bin", dtype=np.uint16)
        for _ in range(40):
            builder.add_document(rng.integers(1, 90, 48).astype(np.int64), [48])
        builder.finalize(f"{p}.idx")
    res = _export(work, "megatron", run, prefixes)

    class Tok:
        eod, pad, vocab_size = 0, 0, 100
        unique_identifiers = {"class": "verify"}  # noqa: RUF012

    total = np.zeros(len(DOMAINS))
    for stage in res.plan.stages:
        folder = work / f"out/megatron/phase_{stage.index}"
        blend = get_blend_from_list((folder / "data_args.txt").read_text().split())
        per_split = json.loads((folder / "per_split_data_args.json").read_text())
        assert get_blend_from_list(per_split["train"]) == blend
        n = (stage.end_step - stage.start_step) * BATCH
        cfg = GPTDatasetConfig(
            random_seed=1,
            sequence_length=16,
            blend=blend,
            split="100,0,0",
            tokenizer=Tok(),
            reset_position_ids=False,
            reset_attention_mask=False,
            eod_mask_loss=False,
        )
        ds = BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True, cfg).build()[0]
        ids = np.bincount([int(ds.dataset_index[i]) for i in range(n)], minlength=len(DOMAINS))
        order = [blend[0].index(prefixes[d]) for d in DOMAINS]
        total += ids[order]
    return _close(total, res.plan.shares, 2e-3, "BlendedDataset samples")


def check_olmo_core(work: Path, run: Path) -> str:
    from olmo_core.data.source_mixture import SourceMixtureDatasetConfig, SourceMixtureList

    (work / "olmo_data").mkdir(exist_ok=True)
    files = {}
    for i, d in enumerate(DOMAINS):
        files[d] = work / "olmo_data" / f"{d}.npy"
        np.arange(200_000 + 40_000 * i, dtype=np.uint16).tofile(files[d])  # raw uint16 tokens
    res = _export(work, "olmo-core", run, {d: str(f) for d, f in files.items()}, max_epochs=2)
    total = np.zeros(len(DOMAINS))
    for stage in res.plan.stages:
        folder = work / f"out/olmo-core/phase_{stage.index}"
        SourceMixtureList.from_yaml(folder / "sources.yaml").validate()
        cfg = SourceMixtureDatasetConfig.from_yaml(folder / "source_mixture.yaml")
        cfg.render_tables, cfg.quiet = False, True
        built = cfg.build(npdtype=np.uint16, sequence_length=SEQ)
        tokens = {o.name: sum(p.tokens for p in o.path_tokens) for o in built.sources}
        total += np.array([tokens.get(d, 0) for d in DOMAINS], dtype=float)
    return _close(total, res.plan.shares, 2e-3, "tokens selected by build()")


def check_nanotron(work: Path, run: Path) -> str:
    stub_modules("flash_attn", "triton")
    import yaml
    from nanotron.config import DatasetStageArgs, get_config_from_dict

    res = _export(work, "nanotron", run)
    raw = yaml.safe_load((work / "out/nanotron/data_stages.yaml").read_text())["data_stages"]
    parsed = [get_config_from_dict(s, config_class=DatasetStageArgs) for s in raw]
    total = np.zeros(len(DOMAINS))
    for stage, args in zip(res.plan.stages, parsed, strict=True):
        assert args.start_training_step == stage.start_step + 1
        ds = args.data.dataset
        assert list(ds.dataset_folder) == list(DOMAINS)
        w = np.asarray(ds.dataset_weights) / np.sum(ds.dataset_weights)  # tokenized_bytes
        total += np.array([int((stage.end_step - stage.start_step) * BATCH * x) for x in w])
    return _close(total, res.plan.shares, 2e-3, f"{len(parsed)} DatasetStageArgs")


def check_levanter(work: Path, run: Path) -> str:
    import draccus
    import yaml
    from levanter.data import ListAsyncDataset
    from levanter.data.mixture import MixtureDataset
    from levanter.data.text import (
        LMMixtureDatasetConfig,
        rescale_mixture_schedule_for_batch_schedule,
    )
    from levanter.schedule import BatchSchedule

    res = _export(work, "levanter", run, step_multiple=256)  # 256 x batch 8 = one 2048 block
    data = yaml.safe_load((work / "out/levanter/data_mixture.yaml").read_text())
    cfg = draccus.decode(LMMixtureDatasetConfig, data)
    stages = rescale_mixture_schedule_for_batch_schedule(cfg.train_weights, BatchSchedule(BATCH))
    sources = {d: ListAsyncDataset([d] * 100_000, is_complete=True) for d in DOMAINS}
    mix = MixtureDataset(sources, stages, block_size=cfg.mixture_block_size, key=0)
    n = res.plan.total_steps * BATCH
    drawn = mix.as_sync_dataset().get_batch(list(range(n)))
    counts = np.array([drawn.count(d) for d in DOMAINS], dtype=float)
    return _close(counts, res.plan.shares, 2e-3, f"MixtureDataset over {n} sequences")


def check_mosaic(work: Path, run: Path) -> str:
    stub_modules("torchvision")
    import yaml
    from streaming import MDSWriter, Stream, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    dirs = {d: work / "mds" / d for d in DOMAINS}
    for d, path in dirs.items():
        with MDSWriter(out=str(path), columns={"domain": "str"}) as writer:
            for _ in range(500):
                writer.write({"domain": d})
    res = _export(work, "mosaic", run, {d: str(p) for d, p in dirs.items()})
    total = np.zeros(len(DOMAINS))
    for stage in res.plan.stages:
        spec = yaml.safe_load((work / f"out/mosaic/phase_{stage.index}/streams.yaml").read_text())
        clean_stale_shared_memory()
        ds = StreamingDataset(
            streams=[Stream(**s) for s in spec["streams"].values()],
            epoch_size=spec["epoch_size"],
            batch_size=1,
            shuffle=False,
        )
        got = [s["domain"] for s in ds]
        total += np.array([got.count(d) for d in DOMAINS], dtype=float)
        del ds
    return _close(total, res.plan.shares, 2e-3, "StreamingDataset samples")


CHECKS: dict[str, Callable[[Path, Path], str]] = {
    "megatron": check_megatron,
    "olmo-core": check_olmo_core,
    "nanotron": check_nanotron,
    "levanter": check_levanter,
    "mosaic": check_mosaic,
}


def main() -> int:
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = write_run(work / "run", drifting_weights(60), log_every=3)
        for name, check in CHECKS.items():
            try:
                message = check(work, run)
                status = "OK (own parser)"
            except ImportError as exc:
                status, message = "not importable", str(exc).splitlines()[0]
            except Exception:  # a real failure: show it, keep checking the others
                failed = True
                status, message = "FAILED", traceback.format_exc()
            print(f"{name:10} {status:16} {message}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
