"""Readers of our own that mirror how each engine parses its mixture files.

Written from reading each engine's source (not copied), for engines whose own parser cannot be
imported here. Each function applies the same rules, in the same order, and raises ValueError
where the engine would refuse the file; the ``*_counts`` functions reproduce how the engine
turns weights into sample counts, for the simulated runs.

* Megatron-Core's *file* reading lives in ``megatron/training`` (not in the ``megatron-core``
  wheel): ``megatron_data_args`` / ``megatron_per_split`` mirror
  ``get_blend_and_blend_per_split``; the blend itself is parsed by megatron-core's own
  ``get_blend_from_list`` in the tests.
* OLMo-core ``olmo_core/data/source_mixture.py`` (``SourceMixtureConfig.validate``,
  ``SourceMixtureList.validate``, ``SourceMixtureDatasetConfig.validate/build``).
* nanotron ``nanotron/config/config.py`` (dacite ``strict=True`` on ``DatasetStageArgs``,
  ``DataArgs``, ``NanosetDatasetsArgs``; ``Config.__post_init__`` stage checks) and
  ``nanotron/data/tokenized_bytes.py`` (normalised weights, ``int(samples x w)``).
* Levanter ``levanter/data/text.py`` (``LMMixtureDatasetConfig.__post_init__``) and
  ``levanter/data/mixture.py`` (``MixtureDataset``: stage checks, block counts).
* mosaic streaming ``streaming/base/stream.py`` (``Stream.__init__``, ``apply_weights``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml


# ---------------------------------------------------------------------------- Megatron
def megatron_data_args(path: Path) -> list[str]:
    """``--data-args-path``: the whole text split on whitespace."""
    return path.read_text().split()


def megatron_per_split(path: Path) -> dict[str, list[str] | None]:
    """``--per-split-data-args-path``: JSON; each split a list, or a string split on spaces."""
    data = json.loads(path.read_text())
    out: dict[str, list[str] | None] = {}
    for split in ("train", "valid", "test"):
        value = data[split]  # KeyError like Megatron when a split is missing
        out[split] = value.split() if isinstance(value, str) else value
    return out


# ---------------------------------------------------------------------------- OLMo-core
_OLMO_SOURCE = {
    "source_name",
    "target_ratio",
    "paths",
    "max_repetition_ratio",
    "max_source_fraction",
}
_OLMO_DATASET = {
    "source_list",
    "requested_tokens",
    "global_batch_size",
    "processes",
    "seed",
    "render_tables",
    "quiet",
}


def olmo_sources(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``SourceMixtureList`` from its dict, validated like OLMo-core."""
    if set(data) != {"sources"}:
        raise ValueError(f"SourceMixtureList fields: {sorted(data)}")
    sources = data["sources"]
    if not sources:
        raise ValueError("sources must not be empty")
    out = []
    for src in sources:
        if not set(src) <= _OLMO_SOURCE or not {"source_name", "target_ratio", "paths"} <= set(src):
            raise ValueError(f"SourceMixtureConfig fields: {sorted(src)}")
        cfg = {"max_repetition_ratio": 1.0, "max_source_fraction": 1.0, **src}
        if cfg["target_ratio"]:
            if not 0 < cfg["target_ratio"] <= 1:
                raise ValueError("target_ratio must be > 0 and <= 1")
            if not 0 < cfg["max_source_fraction"] <= 1:
                raise ValueError("max_source_fraction must > 0 and <= 1")
        if cfg["max_repetition_ratio"] < 1:
            raise ValueError("max_repetition_ratio must be >= 1")
        if not cfg["paths"]:
            raise ValueError("paths must not be empty")
        out.append(cfg)
    total = np.sum([s["target_ratio"] for s in out])
    if not np.allclose(total, 1.0):
        raise ValueError(f"target_ratios must sum to 1.0, got {total}")
    return out


def olmo_dataset(data: dict[str, Any]) -> dict[str, Any]:
    """``SourceMixtureDatasetConfig`` from its dict, validated like OLMo-core."""
    if not set(data) <= _OLMO_DATASET or not {
        "source_list",
        "requested_tokens",
        "global_batch_size",
    } <= set(data):
        raise ValueError(f"SourceMixtureDatasetConfig fields: {sorted(data)}")
    if data["requested_tokens"] <= 0:
        raise ValueError("requested_tokens must be > 0")
    return {**data, "sources": olmo_sources(data["source_list"])}


def olmo_selected_tokens(
    cfg: dict[str, Any], population: dict[str, int], sequence_length: int
) -> dict[str, int]:
    """Tokens OLMo-core's ``build`` selects per source (one path per source)."""
    needed, caps = {}, {}
    for src in cfg["sources"]:
        name, n = src["source_name"], population[src["source_name"]]
        needed[name] = int(cfg["requested_tokens"] * src["target_ratio"])
        caps[name] = int(n * src["max_source_fraction"] * src["max_repetition_ratio"])
        if caps[name] < needed[name]:
            raise ValueError(f"Insufficient tokens for source: {name}")
    if cfg["global_batch_size"] % sequence_length:
        raise ValueError("global_batch_size must be multiple of sequence_length")
    steps = -(-cfg["requested_tokens"] // cfg["global_batch_size"])
    requested = steps * (cfg["global_batch_size"] // sequence_length)
    names = list(needed)
    inst = {k: min(needed[k], caps[k]) // sequence_length for k in names}
    rem = {k: (needed[k] % sequence_length) / sequence_length for k in names}
    extra = requested - sum(inst.values())
    eligible = [k for k in names if inst[k] < caps[k] // sequence_length]
    if extra > 0 and eligible:
        base, _ = divmod(extra, len(eligible))
        for k in eligible:
            inst[k] += min(base, caps[k] // sequence_length - inst[k])
        extra = requested - sum(inst.values())
        order = sorted(
            ((rem[k], k) for k in eligible if inst[k] < caps[k] // sequence_length), reverse=True
        )
        for _, k in order[: max(0, extra)]:
            inst[k] += 1
    return {k: inst[k] * sequence_length for k in names}


# ---------------------------------------------------------------------------- nanotron
_NANO_STAGE = {"name", "start_training_step", "data", "sequence_length"}
_NANO_DATA = {"dataset", "seed", "num_loading_workers"}
_NANOSET = {
    "dataset_folder",
    "dataset_weights",
    "dataset_read_path",
    "tokenizer_name",
    "vocab_size",
    "token_size_in_bytes",
    "return_positions",
    "skip_in_stream",
    "pad_samples_to_global_batch_size",
    "dataset_max_tokens",
    "shuffle_files",
    "use_old_brrr_dataloader",
}


def nanotron_stages(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``Config.data_stages`` as dacite (strict) + ``Config.__post_init__`` accept them."""
    stages = data["data_stages"]
    for st in stages:
        if not set(st) <= _NANO_STAGE or not {"name", "start_training_step", "data"} <= set(st):
            raise ValueError(f"DatasetStageArgs fields: {sorted(st)}")
        if not isinstance(st["name"], str) or type(st["start_training_step"]) is not int:
            raise ValueError("name must be str, start_training_step int")
        if st["start_training_step"] < 0:
            raise ValueError("training_steps should be a positive integer")
        d = st["data"]
        if not set(d) <= _NANO_DATA or not {"dataset", "seed"} <= set(d):  # no defaults
            raise ValueError(f"DataArgs fields: {sorted(d)}")
        ds = d["dataset"]
        if not set(ds) <= _NANOSET or "dataset_folder" not in ds:
            raise ValueError(f"NanosetDatasetsArgs fields: {sorted(ds)}")
        folders, weights = ds["dataset_folder"], ds.get("dataset_weights")
        if isinstance(folders, str):
            folders, weights = [folders], [1]
        if not all(isinstance(f, str) for f in folders):
            raise ValueError("dataset_folder: List[str]")
        if weights is not None:
            if not all(type(w) is float for w in weights):  # dacite: List[float], no int cast
                raise ValueError("dataset_weights: List[float]")
            if len(weights) != len(folders):
                raise ValueError("Number of dataset weights does not match number of folders")
    stages = sorted(stages, key=lambda s: s["start_training_step"])
    names = [s["name"] for s in stages]
    steps = [s["start_training_step"] for s in stages]
    if 1 not in steps:
        raise ValueError("You must have a training stage starting at 1")
    if len(set(names)) != len(names) or len(set(steps)) != len(steps):
        raise ValueError("stage names and start steps must be unique")
    return stages


def nanotron_counts(stage: dict[str, Any], samples: int) -> np.ndarray:
    """Samples per folder: weights normalised, ``int(samples x w_i)``."""
    w = np.array(stage["data"]["dataset"]["dataset_weights"], dtype=np.float64)
    w = w / w.sum()
    return np.array([int(samples * x) for x in w])


# ---------------------------------------------------------------------------- Levanter
_LEV_SOURCE = {
    "train_urls",
    "validation_urls",
    "cache_dir",
    "tags",
    "format",
    "id",
    "name",
    "stream",
}


def levanter_stages(
    data: dict[str, Any], batch_size: int, block_size: int = 2048
) -> list[tuple[int, dict[str, float]]]:
    """``train_weights`` -> ``MixtureDataset`` stages (sequence offsets, normalised weights)."""
    configs = data["configs"]
    if not configs:
        raise ValueError("At least one dataset must be provided")
    for name, src in configs.items():
        if not set(src) <= _LEV_SOURCE:
            raise ValueError(f"{name}: unknown source fields {sorted(src)}")
    tw = data["train_weights"]
    if isinstance(tw, dict):
        stages = [(0, tw)]
    elif isinstance(tw, list):
        stages = []
        for item in tw:
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int):
                raise ValueError(f"train_weights stage must be [step, {{name: w}}], got {item!r}")
            stages.append((item[0], item[1]))
    else:
        raise ValueError(f"Invalid train_weights type: {type(tw)}")
    for _, weights in stages:
        if not all(name in configs for name in weights):
            raise ValueError("Weight keys must be subset of config keys")
    offsets = [(step * batch_size, w) for step, w in stages]  # rescale for a constant batch
    out = []
    for i, (start, weights) in enumerate(offsets):
        if i == 0 and start != 0:
            raise ValueError("first stage must start at 0")
        if i > 0 and (start % block_size or start <= offsets[i - 1][0]):
            raise ValueError(f"start_seq_index {start} not a multiple of {block_size} or unsorted")
        total = sum(weights.values())
        if total == 0 or any(v < 0 for v in weights.values()):
            raise ValueError("weights must be >= 0 with a positive sum")
        out.append((start, {k: v / total for k, v in weights.items() if v > 0}))
    return out


def levanter_block_counts(weights: dict[str, float], names: list[str], block: int) -> np.ndarray:
    """Sequences of each source in one block: truncated ``w x block``, remainder to the largest."""
    counts = np.zeros(len(names), dtype=np.int32)
    for i, n in enumerate(names):
        counts[i] = weights.get(n, 0) * block
    counts[np.argmax(counts)] += block - counts.sum()
    return counts


# ---------------------------------------------------------------------------- mosaic
def mosaic_streams(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Stream kwargs as ``Stream.__init__`` checks them; all relative (proportion) or none."""
    streams = list(data["streams"].values())
    for s in streams:
        if "remote" not in s and "local" not in s:
            raise ValueError("a stream needs remote or local")
        if sum(k in s for k in ("proportion", "repeat", "choose")) > 1:
            raise ValueError("At most one of proportion, repeat, and choose")
        if s.get("proportion", 0) < 0:
            raise ValueError("`proportion` must be non-negative")
    if any("proportion" in s for s in streams) and not all("proportion" in s for s in streams):
        raise ValueError("all streams need a proportion when one has it")
    return streams


def mosaic_choose(streams: list[dict[str, Any]], epoch_size: int, seed: int = 0) -> np.ndarray:
    """Samples per stream per epoch (``apply_weights``, relative weights)."""
    p = np.array([s["proportion"] for s in streams], np.float64)
    p /= p.sum()
    choose = (epoch_size * p).astype(np.int64)
    shortfall = epoch_size - choose.sum()
    rng = np.random.default_rng(seed)
    choose[rng.choice(len(streams), shortfall, False)] += 1
    return choose


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
