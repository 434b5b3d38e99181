"""Read a mixture out of any mixlab artefact: a run folder, DoReMi's or a search's weights.

Every source becomes one :class:`Trajectory`: the token shares in force over consecutive
windows of training, the tokens trained in each window and, when the artefact says so, how many
training tokens each domain holds. A static mixture is a trajectory of one window; an adaptive
run (ODM, AC-ODM, DoReMi-online) is one window per logged train record, which
:mod:`mixlab.engines.phases` compresses into a few stages.

Accepted sources:

* **a run folder** (``mixlab train`` / ``compare``: ``config.yaml`` + ``metrics.jsonl``). Every
  train record carries the sampler's cumulative counters (:meth:`MixtureSampler.stats`):
  ``domain/<d>/tokens`` (tokens served so far), ``domain/<d>/epochs`` and
  ``mix/requested/<d>`` (token-weighted average of the effective weights in force so far),
  plus the policy's weights at the record (``mix/weight/<d>``, and ``mix/p_eff/<d>`` with a
  per-domain floor). The weights of window ``i`` (between records ``i-1`` and ``i``, ``T_i``
  tokens served in total up to record ``i``) are recovered exactly from the cumulative average::

      w_i = (R_i * T_i - R_{i-1} * T_{i-1}) / (T_i - T_{i-1})

  which is what the sampler really drew from (floor included), not the policy's last
  proposal. Records without ``mix/requested`` fall back to ``mix/p_eff``, then ``mix/weight``.
  A domain's training tokens are ``tokens / epochs`` (or, failing that, the run's shard store).
  A resumed run that re-logged steps keeps the latest record of each step.
* **doremi_weights.json** (``mixlab doremi``; or its ``--out`` folder): ``{"weights": {d: w},
  "proxy_run": ..., ...}``. Domain sizes come from the proxy run when its folder still exists.
* **a search's weights** (``{"weights": {d: w}, ...other keys}``) and **a plain mapping**
  ``{d: w}``: the two shapes ``mixing.weights_file`` accepts, read by the same
  :func:`mixlab.mixing.static.read_weights_file` (weights must sum to 1 unless
  ``normalise=True``).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixlab.errors import ConfigError, DataError
from mixlab.mixing.static import read_weights_file
from mixlab.train.run_folder import RunFolder

log = logging.getLogger(__name__)

DOREMI_NAME = "doremi_weights.json"


@dataclass(frozen=True)
class Trajectory:
    """Token shares over consecutive windows of one training (a static mixture: one window).

    Attributes:
        domains: domain names, the column order of ``weights``.
        steps: (T,) optimiser steps done at the end of each window: window ``i`` covers the
            0-based steps ``steps[i-1] .. steps[i] - 1`` (``0 .. steps[0] - 1`` for the first).
            For a weights file without steps: ``[1]``.
        weights: (T, K) token shares in force during each window (rows sum to 1).
        tokens: (T,) tokens trained in each window (relative sizes are what matter).
        domain_tokens: (K,) training tokens of each domain in the corpus the source used, or
            None when the source does not tell.
        source: where it came from, for messages.
        kind: ``run``, ``doremi``, ``search`` or ``weights``.
        seq_len: the run's sequence length, when the source is a run.
        timed: whether ``steps`` are real optimiser steps (False for a weights file).
    """

    domains: tuple[str, ...]
    steps: np.ndarray
    weights: np.ndarray
    tokens: np.ndarray
    domain_tokens: np.ndarray | None
    source: str
    kind: str
    seq_len: int | None = None
    timed: bool = True

    @property
    def start_steps(self) -> np.ndarray:
        """(T,) first step (0-based) of each window."""
        return np.concatenate([[0], self.steps[:-1]]).astype(np.int64)

    @property
    def shares(self) -> np.ndarray:
        """(K,) token shares of the whole trajectory: the token-weighted mean of the windows."""
        return (self.tokens[:, None] * self.weights).sum(axis=0) / self.tokens.sum()

    @property
    def is_static(self) -> bool:
        """True when every window has the same weights (to 1e-12)."""
        return bool(np.all(np.abs(self.weights - self.weights[0]) <= 1e-12))


def read_source(path: str | Path, *, normalise: bool = False) -> Trajectory:
    """The mixture held by ``path`` (run folder, metrics.jsonl, or a weights JSON file).

    ``normalise`` rescales weights files that do not sum to 1 (never silently: logged).
    Raises ConfigError / DataError naming the file (and line) and what to give instead.
    """
    p = Path(path)
    if p.is_dir():
        if RunFolder(p).metrics.is_file():
            return read_run(p)
        if (p / DOREMI_NAME).is_file():
            return read_weights_json(p / DOREMI_NAME, normalise=normalise)
        seeds = sorted(c.name for c in p.iterdir() if RunFolder(c).metrics.is_file())
        if seeds:
            raise ConfigError(
                f"{p} holds several runs ({', '.join(seeds)}); give one run folder, "
                f"e.g. {p / seeds[0]}"
            )
        raise ConfigError(
            f"{p}: no {RunFolder.METRICS} (a run folder) or {DOREMI_NAME} here; give a run folder, "
            "a doremi_weights.json, a search_weights.json or a JSON mapping domain -> weight"
        )
    if not p.exists():
        raise ConfigError(f"{p} does not exist; give a run folder or a weights JSON file")
    if p.name == RunFolder.METRICS:
        return read_run(p.parent)
    if p.suffix in (".pt", ".pth", ".safetensors"):
        raise ConfigError(
            f"{p}: a checkpoint or policy file holds a network, not a mixture; export the run "
            "folder that trained with it (its metrics.jsonl has the weights it drew from)"
        )
    return read_weights_json(p, normalise=normalise)


# ---------------------------------------------------------------------------- weights files
def read_weights_json(path: str | Path, *, normalise: bool = False) -> Trajectory:
    """A static mixture from ``{d: w}`` or ``{"weights": {d: w}, ...}`` (DoReMi, search)."""
    p = Path(path)
    data = _load_json(p)
    nested = isinstance(data, dict) and isinstance(data.get("weights"), dict)
    mapping = data["weights"] if nested else data
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(
            f"{p}: expected a JSON object mapping domain name to weight, or "
            '{"weights": {domain: weight, ...}}'
        )
    domains = tuple(str(k) for k in mapping)
    try:
        w = read_weights_file(p, domains, normalise=normalise)
    except ConfigError as exc:
        hint = "" if normalise else " (pass --normalise to rescale weights that do not sum to 1)"
        raise ConfigError(f"{exc}{hint}") from None
    kind = "weights"
    domain_tokens = None
    if nested:
        kind = "doremi" if "proxy_run" in data or p.name == DOREMI_NAME else "search"
        if kind == "doremi":
            domain_tokens = _doremi_domain_tokens(p, data, domains)
    return Trajectory(
        domains=domains,
        steps=np.array([1], dtype=np.int64),
        weights=w[None, :],
        tokens=np.array([1.0]),
        domain_tokens=domain_tokens,
        source=str(p),
        kind=kind,
        timed=False,
    )


def _load_json(p: Path) -> Any:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{p}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); give a run "
            "folder or a JSON weights file"
        ) from exc


def _doremi_domain_tokens(p: Path, data: dict[str, Any], domains: tuple[str, ...]) -> Any:
    """Domain sizes from DoReMi's proxy run, when its folder can still be found."""
    proxy = data.get("proxy_run")
    if not isinstance(proxy, str):
        return None
    rel = Path(proxy)
    for candidate in (rel, p.parent / Path(*rel.parts[-2:])):
        if RunFolder(candidate).metrics.is_file():
            try:
                run = read_run(candidate)
            except (ConfigError, DataError) as exc:
                log.info("DoReMi proxy run %s not usable for domain sizes: %s", candidate, exc)
                return None
            if run.domain_tokens is None or set(run.domains) != set(domains):
                return None
            order = [run.domains.index(d) for d in domains]
            return run.domain_tokens[order]
    return None


# ---------------------------------------------------------------------------- run folders
def read_run(run_dir: str | Path) -> Trajectory:
    """The weight trajectory of a run folder (see the module docstring for the formula)."""
    run_dir = Path(run_dir)
    records = _train_records(RunFolder(run_dir).metrics)
    domains = _domains(records[-1], RunFolder(run_dir).metrics)
    k = len(domains)
    steps = np.array([int(r["step"]) for r in records], dtype=np.int64)

    served = _matrix(records, "domain/{}/tokens", domains)  # cumulative, (T, K)
    if served is not None:
        total = served.sum(axis=1)
        window_tokens = np.diff(np.concatenate([[0.0], total]))
    else:
        total = None
        window_tokens = np.diff(np.concatenate([[0], steps])).astype(np.float64)

    requested = _matrix(records, "mix/requested/{}", domains)
    if requested is not None and total is not None:
        cumulative = requested * total[:, None]  # token-weighted sum of the weights in force
        weights = np.diff(np.vstack([np.zeros(k), cumulative]), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            weights = weights / window_tokens[:, None]
    else:
        weights = _matrix(records, "mix/p_eff/{}", domains)
        if weights is None:
            weights = _matrix(records, "mix/weight/{}", domains)
        if weights is None:
            raise DataError(
                f"{RunFolder(run_dir).metrics}: train records carry no mix/weight/<domain> keys; "
                "this is not a mixlab training run"
            )

    keep = window_tokens > 0
    if not keep.all():  # a record logged twice at the same counters adds no window
        steps, weights, window_tokens = steps[keep], weights[keep], window_tokens[keep]
    if not len(steps):
        raise DataError(f"{RunFolder(run_dir).metrics}: no training tokens recorded yet")
    # Cumulative differences carry rounding at the 1e-12 level: clean and renormalise.
    weights = np.clip(weights, 0.0, None)
    weights = weights / weights.sum(axis=1, keepdims=True)

    cfg = _read_config(run_dir)
    seq_len = cfg.get("data", {}).get("seq_len") if isinstance(cfg.get("data"), dict) else None
    return Trajectory(
        domains=domains,
        steps=steps,
        weights=weights,
        tokens=window_tokens,
        domain_tokens=_run_domain_tokens(records[-1], domains, cfg, run_dir),
        source=str(run_dir),
        kind="run",
        seq_len=int(seq_len) if isinstance(seq_len, int) else None,
    )


def _train_records(path: Path) -> list[dict[str, Any]]:
    """Train records (those with ``mix/weight/...``) in step order; later ones win a step."""
    records: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from exc
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # a line cut by a crash mid-write
                log.warning("%s:%d: torn last line ignored", path, lineno)
                continue
            raise DataError(
                f"{path}:{lineno}: not a JSON record ({exc.msg}); repair or delete that line"
            ) from exc
        if not isinstance(rec, dict) or not any(str(k).startswith("mix/weight/") for k in rec):
            continue  # eval records and others
        if not isinstance(rec.get("step"), int):
            raise DataError(f"{path}:{lineno}: train record without an integer 'step'")
        while records and records[-1]["step"] >= rec["step"]:
            records.pop()  # a resumed run logs again from its checkpoint: the later run wins
        records.append(rec)
    if not records:
        raise DataError(
            f"{path}: no train records (keys mix/weight/<domain>); was the run started? "
            "train records are written every train.log_every steps"
        )
    return records


def _domains(record: dict[str, Any], path: Path) -> tuple[str, ...]:
    prefix = "mix/weight/"
    domains = tuple(k[len(prefix) :] for k in record if k.startswith(prefix))
    if not domains:
        raise DataError(f"{path}: the last train record names no domain")
    return domains


def _matrix(records: list[dict[str, Any]], key: str, domains: tuple[str, ...]) -> Any:
    """(T, K) values of ``key.format(domain)``; None unless every record has every key."""
    try:
        return np.array(
            [[float(r[key.format(d)]) for d in domains] for r in records], dtype=np.float64
        )
    except (KeyError, TypeError, ValueError):
        return None


def _read_config(run_dir: Path) -> dict[str, Any]:
    from mixlab.config import read_yaml_mapping

    path = RunFolder(run_dir).config
    return read_yaml_mapping(path, "run config") if path.is_file() else {}


def _run_domain_tokens(
    last: dict[str, Any], domains: tuple[str, ...], cfg: dict[str, Any], run_dir: Path
) -> np.ndarray | None:
    """Training tokens per domain: served / epochs, else the run's shard store, else None."""
    sizes: list[float] = []
    for d in domains:
        served, ep = last.get(f"domain/{d}/tokens"), last.get(f"domain/{d}/epochs")
        if isinstance(served, (int, float)) and isinstance(ep, (int, float)) and ep > 0:
            sizes.append(float(round(float(served) / float(ep))))
        else:
            sizes.append(math.nan)
    if not any(math.isnan(s) for s in sizes):
        return np.array(sizes, dtype=np.float64)
    store = cfg.get("data", {}).get("store") if isinstance(cfg.get("data"), dict) else None
    if isinstance(store, str) and store:
        from mixlab.data.store import ShardStore

        try:
            shards = ShardStore(store)
        except (ConfigError, DataError, OSError) as exc:
            log.info("%s: shard store %s not readable for domain sizes (%s)", run_dir, store, exc)
            return None
        if set(shards.domains) == set(domains):
            return np.array([shards.num_tokens(d) for d in domains], dtype=np.float64)
    return None
