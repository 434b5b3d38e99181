"""Downstream evaluation with lm-evaluation-harness (``mixlab eval RUN --lm-eval TASKS``).

What is computed
    lm-eval's own metrics for each task (``acc``/``acc_norm`` for multiple choice,
    ``word_perplexity``/``byte_perplexity``/``bits_per_byte`` for rolling log-likelihood, ...)
    on the run's model, exactly as ``lm_eval --model hf`` would: the model and tokenizer go in
    as objects through lm-eval's ``HFLM`` (the same model and tokenizer :mod:`mixlab.model.export`
    writes), so no temporary export is needed. ``RUN`` is a run folder / checkpoint, or an
    exported HF model folder.

Offline
    ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` are set before lm-eval loads, so a task
    whose data is not on disk fails instead of downloading. Tasks with local data work:
    mixlab bundles ``mixlab_domain_cloze`` and ``mixlab_domain_text`` (tag ``mixlab``; data in
    ``mixlab/eval/lm_eval_tasks``), and ``include`` adds folders of your own task YAMLs (lm-eval
    ``--include_path``). When every requested task is local, lm-eval's ~15k built-in task
    configs are not indexed (saves ~5 s).

Knobs
    ``limit`` (documents per task; lm-eval's ``--limit``), ``batch_size``, ``max_length``
    (default: the training ``seq_len``; longer contexts are cut from the left, as lm-eval does).

Extra: ``pip install 'mixlab[lm-eval]'``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixlab.errors import ConfigError
from mixlab.files import dumps_json, write_text
from mixlab.train.run_folder import RunFolder

logger = logging.getLogger(__name__)

BUNDLED_TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"


def force_offline() -> None:
    """Make the HF hub and datasets refuse network access in this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    # Both libraries read the variables once at import; if they are loaded already (e.g. by
    # transformers), flip the module constants too.
    for module, names in (
        ("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
        ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
    ):
        loaded = sys.modules.get(module)
        for name in names:
            if loaded is not None and hasattr(loaded, name):
                setattr(loaded, name, True)


@dataclass(frozen=True)
class HarnessResult:
    """lm-eval's result dict plus what was evaluated."""

    source: str
    tasks: tuple[str, ...]
    raw: dict[str, Any]

    def metrics(self) -> dict[str, dict[str, float]]:
        """task -> metric name -> value (``acc,none`` style keys as lm-eval writes them)."""
        out: dict[str, dict[str, float]] = {}
        for task, values in self.raw.get("results", {}).items():
            out[task] = {
                k: float(v)
                for k, v in values.items()
                if isinstance(v, (int, float)) and k != "name"
            }
        return out

    def format_table(self) -> str:
        from lm_eval.utils import make_table

        return str(make_table(self.raw))

    def to_json(self) -> str:
        from lm_eval.utils import handle_non_serializable

        keep = ("results", "groups", "group_subtasks", "versions", "n-shot", "higher_is_better")
        payload = {key: self.raw[key] for key in keep if key in self.raw}
        payload["n-samples"] = self.raw.get("n-samples", {})
        payload["mixlab"] = {"source": self.source, "tasks": list(self.tasks)}
        return dumps_json(payload, indent=2, default=handle_non_serializable)


def parse_tasks(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"a,b c"`` or ``["a,b", "c"]`` -> ``("a", "b", "c")``; ConfigError when empty."""
    items = [text] if isinstance(text, str) else list(text)
    tasks = tuple(t for item in items for t in item.replace(",", " ").split() if t)
    if not tasks:
        raise ConfigError("--lm-eval: name at least one task, e.g. --lm-eval mixlab_domain_cloze")
    return tasks


def run_harness(
    source: str | Path,
    tasks: Sequence[str],
    *,
    include: Sequence[str | Path] = (),
    limit: int | float | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    seed: int = 0,
) -> HarnessResult:
    """Score ``source`` (run folder, checkpoint or exported model folder) on lm-eval ``tasks``."""
    force_offline()
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        raise ConfigError(
            f"--lm-eval needs lm-evaluation-harness ({exc}): pip install 'mixlab[lm-eval]'"
        ) from exc
    tasks = parse_tasks(tasks)
    folders = [BUNDLED_TASKS, *(Path(p) for p in include)]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"--lm-eval-include: {folder} is not a folder of task YAML files")
    manager = _task_manager(tasks, folders)
    model, tokenizer, trained_len = _load_model(source)
    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length or trained_len,
        device="cpu",
    )
    raw = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        log_samples=False,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    if raw is None:  # only on non-zero ranks of a distributed lm-eval run
        raise ConfigError("lm-eval returned no results")
    return HarnessResult(str(source), tasks, dict(raw))


def _task_manager(tasks: Sequence[str], folders: Sequence[Path]) -> Any:
    from lm_eval.tasks import TaskManager

    paths = [str(f) for f in folders]
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(t in local.all_tasks for t in tasks):
        return local
    manager = TaskManager(include_path=paths)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"--lm-eval: unknown task(s) {', '.join(unknown)}; local tasks: "
            f"{', '.join(sorted(local.all_tasks))} (add folders with --lm-eval-include)"
        )
    logger.info("using lm-eval's built-in tasks: their data must already be cached (offline)")
    return manager


def _load_model(source: str | Path) -> tuple[Any, Any, int | None]:
    """(model, tokenizer, training seq_len or None) for a run or an exported folder."""
    from mixlab.model.export import EXPORT_INFO, hf_tokenizer, is_exported_model

    path = Path(source)
    if is_exported_model(path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        info = path / EXPORT_INFO
        seq_len = (
            json.loads(info.read_text(encoding="utf-8"))["seq_len"] if info.is_file() else None
        )
        return model.eval(), tokenizer, seq_len
    from mixlab.eval.runs import load_run

    saved = load_run(path)
    tokenizer = hf_tokenizer(saved.store, model_max_length=saved.cfg.data.seq_len)
    return saved.model, tokenizer, saved.cfg.data.seq_len


def write_result(result: HarnessResult, path: str | Path) -> Path:
    """Write the JSON of ``result`` to ``path``."""
    return write_text(path, result.to_json() + "\n")


def default_result_path(source: str | Path) -> Path:
    """``lm_eval.json`` in the run (or exported) folder; next to a checkpoint file."""
    p = Path(source)
    return RunFolder(p if p.is_dir() else p.parent).lm_eval
