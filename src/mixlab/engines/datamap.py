"""Where each domain's data lives in the target stack: the ``--prefixes`` file.

A YAML or JSON mapping from domain name to its data in the engine's terms (Megatron dataset
prefixes, OLMo-core ``.npy`` files, nanotron dataset folders, Levanter train URLs, HF dataset
names, mosaic stream directories)::

    code: /data/megatron/code_text_document          # one path
    prose: [/data/prose_00_text_document, /data/prose_01_text_document]   # several
    web:
      paths: [/data/web_00_text_document, /data/web_01_text_document]
      tokens: [3.0e9, 1.0e9]     # tokens of each path (optional)
      valid: [/data/web_val_text_document]   # Megatron valid / test prefixes (optional)
      test: [/data/web_test_text_document]
      tokens_per_sample: 812     # HF datasets / mosaic: mean tokens per example (optional)

**Several paths.** A domain's weight ``w`` is split over its paths in proportion to their
``tokens`` when every path has a count, else equally: ``w_p = w * N_p / sum N``. Token counts
also give the domain's size for the per-domain epochs of the target budget (they describe the
corpus the target run trains on, so they win over the sizes a proxy run saw).

**Tokens vs samples.** mixlab's weights are token shares. Megatron (GPTDataset), nanotron,
Levanter and OLMo-core sample fixed-length sequences, so a share of samples *is* a share of
tokens and the weights are written as they are. HF ``interleave_datasets`` and mosaic streams
sample *examples*; when an example is a document of ``L_d`` tokens on average
(``tokens_per_sample``), the example probabilities that give token shares ``w`` are
``p_d = (w_d / L_d) / sum_e (w_e / L_e)``; without it examples are taken as fixed-length.

Without a ``--prefixes`` file every domain's path is its own name (a placeholder to edit).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mixlab.errors import ConfigError, reject_unknown_keys

_KEYS = ("paths", "tokens", "valid", "test", "tokens_per_sample")


@dataclass(frozen=True)
class DomainData:
    """One domain's paths in the engine, their token counts and optional extras."""

    paths: tuple[str, ...]
    tokens: tuple[float, ...] | None = None
    valid: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    tokens_per_sample: float | None = None

    @property
    def total_tokens(self) -> float | None:
        return float(sum(self.tokens)) if self.tokens is not None else None

    def split(self, weight: float) -> list[tuple[str, float]]:
        """(path, weight) pairs: ``weight`` split by token counts, else equally."""
        if self.tokens is not None and sum(self.tokens) > 0:
            total = float(sum(self.tokens))
            return [(p, weight * n / total) for p, n in zip(self.paths, self.tokens, strict=True)]
        return [(p, weight / len(self.paths)) for p in self.paths]


@dataclass(frozen=True)
class DataMap:
    """Domain -> :class:`DomainData` for every domain of the mixture."""

    domains: dict[str, DomainData]
    source: str | None  # the file, or None for placeholders

    @property
    def placeholder(self) -> bool:
        return self.source is None

    def domain_tokens(self, domains: Sequence[str]) -> np.ndarray | None:
        """(K,) token counts when the file gives them for every domain, else None."""
        sizes = [self.domains[d].total_tokens for d in domains]
        if any(s is None for s in sizes):
            return None
        return np.array(sizes, dtype=np.float64)


def placeholder_map(domains: Sequence[str]) -> DataMap:
    """Every domain's path is its own name (to edit before training)."""
    return DataMap({d: DomainData(paths=(d,)) for d in domains}, source=None)


def read_data_map(path: str | Path, domains: Sequence[str]) -> DataMap:
    """Read and check a ``--prefixes`` file for the mixture's ``domains``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"--prefixes {p}: file not found; give a YAML/JSON mapping domain -> path(s)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--prefixes {p}: cannot be read ({exc})") from exc
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: expected a mapping domain -> path(s), got {type(data).__name__}; e.g.\n"
            "  code: /data/code_text_document\n  web: [/data/web_00, /data/web_01]"
        )
    lines = _key_lines(text)
    missing = [d for d in domains if d not in data]
    if missing:
        raise ConfigError(
            f"{p}: no path for domain(s) {', '.join(map(repr, missing))}; add a line "
            f"'{missing[0]}: <path>' (the mixture's domains: {', '.join(domains)})"
        )
    out = {}
    for d in domains:
        where = f"{p}:{lines[d]}" if d in lines else str(p)
        out[d] = _domain_data(data[d], f"{where}: domain {d!r}")
    return DataMap(out, source=str(p))


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key (YAML and JSON), for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def _paths(value: Any, where: str, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise ConfigError(f"{where}: {key} must be a path or a non-empty list of paths")
    if any(not x.strip() for x in items):
        raise ConfigError(f"{where}: {key} holds an empty path")
    return tuple(items)


def _domain_data(value: Any, where: str) -> DomainData:
    if isinstance(value, (str, list)):
        return DomainData(paths=_paths(value, where, "the value"))
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a path, a list of paths or a mapping with 'paths'")
    reject_unknown_keys(value, _KEYS, where)
    if "paths" not in value:
        raise ConfigError(f"{where}: missing 'paths'")
    paths = _paths(value["paths"], where, "paths")
    tokens = value.get("tokens")
    if tokens is not None:
        counts = tokens if isinstance(tokens, list) else [tokens]
        if len(counts) != len(paths):
            raise ConfigError(
                f"{where}: {len(counts)} token count(s) for {len(paths)} path(s); give one per path"
            )
        try:
            tokens = tuple(float(x) for x in counts)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: tokens must be numbers, got {counts!r}") from None
        if any(not np.isfinite(x) or x < 0 for x in tokens):
            raise ConfigError(f"{where}: tokens must be finite numbers >= 0, got {counts!r}")
    tps = value.get("tokens_per_sample")
    if tps is not None and (
        isinstance(tps, bool) or not isinstance(tps, (int, float)) or not tps > 0
    ):
        raise ConfigError(f"{where}: tokens_per_sample must be a number > 0, got {tps!r}")
    return DomainData(
        paths=paths,
        tokens=tokens,
        valid=_paths(value["valid"], where, "valid") if "valid" in value else (),
        test=_paths(value["test"], where, "test") if "test" in value else (),
        tokens_per_sample=float(tps) if tps is not None else None,
    )
