"""The search spec: which proxy, which target budget, which swarm, which fit (``mixlab search``).

A spec is a YAML file (``configs/search/demo.yaml``)::

    name: demo-search
    base_config: ../tiny_cpu.yaml     # optional run recipe (relative to this file) ...
    base:                             # ... and/or fields on top: the PROXY run (store, model,
      data: {store: mixlab-demo/store}    # steps, batch); same shape as a suite's base
      train: {max_steps: 200}
    target:                           # the budget the mixture is searched FOR, one of:
      max_steps: 4000                 #   steps x tokens_per_step (default: the proxy's
      tokens_per_step: 2048           #   batch_size x grad_accum x seq_len)
      # tokens: 8192000               #   a token count
      # config: target.yaml           #   a run config (path or mapping) merged over base:
                                      #   max_steps x batch_size x grad_accum x seq_len
    swarm:
      runs: null                      # Dirichlet mixtures; null = 3 K (prior + corners on top)
      prior: natural                  # natural | uniform | unimax | {domain: weight}
      concentration: 1.0              # Dirichlet alpha = c K prior
      max_epochs: 4                   # epoch caps at the TARGET budget: number | {domain: n}
      seed: 0                         # proposals
      proxy_seeds: [0]                # training seeds per mixture (losses are averaged)
      corners: true                   # one mixture per domain pushed to its cap
      repetition_matching: true       # proxies train on data.subsample = proxy / target tokens
    fit:
      law: loglinear                  # loglinear | linear | gbm
      objective: mean                 # mean | worst | weighted | natural
      objective_weights: null         # {domain: weight} for objective=weighted
      kl_weight: 0.0                  # + kl_weight * KL(w || prior)
      trust_region: median            # KL(w || prior) <= the swarm's median | max | nats | null
      bootstrap: 50                   # resamples for the intervals (0 = none)
      bootstrap_level: 0.9
      cv_folds: null                  # null = leave-one-out up to 40 runs
      min_spearman: 0.7               # verdict thresholds (held-out)
      min_objective_r2: 0.5
    eval:
      every: 0                        # proxy eval interval in steps; 0 = only at the end
      domains: null                   # evaluation domains the objective uses; null = all

Every section and key is checked: unknown keys, wrong types and out-of-range values raise a
:class:`~mixlab.errors.ConfigError` that names the file and the field (``swarm.prior``).
``--set a.b=c`` (:func:`load_search_spec`'s ``overrides``) edits the spec before it is
checked, with spec paths: ``swarm.runs=4``, ``base.train.max_steps=50``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mixlab.errors import ConfigError, reject_unknown_keys
from mixlab.search.law import available_laws
from mixlab.search.objective import OBJECTIVES

PRIORS = ("natural", "uniform", "unimax")
_TOP_KEYS = ("name", "base_config", "base", "target", "swarm", "fit", "eval")
_TARGET_KEYS = ("max_steps", "tokens_per_step", "tokens", "config")


@dataclass
class SwarmSettings:
    """Which proxy runs to train (``swarm:``)."""

    runs: int | None = None
    prior: str | dict[str, float] = "natural"
    concentration: float = 1.0
    max_epochs: float | dict[str, float] | None = None
    seed: int = 0
    proxy_seeds: list[int] = field(default_factory=lambda: [0])
    corners: bool = True
    repetition_matching: bool = True


@dataclass
class FitSettings:
    """How to turn the swarm into a mixture (``fit:``)."""

    law: str = "loglinear"
    objective: str = "mean"
    objective_weights: dict[str, float] | None = None
    kl_weight: float = 0.0
    trust_region: str | float | None = "median"
    bootstrap: int = 50
    bootstrap_level: float = 0.9
    cv_folds: int | None = None
    min_spearman: float = 0.7
    min_objective_r2: float = 0.5


@dataclass
class EvalSettings:
    """Proxy evaluation (``eval:``)."""

    every: int = 0
    domains: list[str] | None = None


@dataclass
class SearchSpec:
    """A checked spec. ``base`` and ``target`` stay plain mappings (run-config shaped)."""

    name: str
    base: dict[str, Any]
    target: dict[str, Any]
    swarm: SwarmSettings = field(default_factory=SwarmSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    source: str = "<search spec>"

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (``base_config`` already merged into ``base``)."""
        out = asdict(self)
        out.pop("source")
        return out

    def swarm_part(self) -> dict[str, Any]:
        """What decides the proxy runs (a folder made with another one is refused)."""
        d = self.to_dict()
        return {
            "base": d["base"],
            "target": d["target"],
            "swarm": d["swarm"],
            "eval": {"every": self.eval.every},
        }


# ---------------------------------------------------------------------------- loading
def load_search_spec(path: str | Path, overrides: Iterable[str] = ()) -> SearchSpec:
    """Read a spec file, merge ``base_config`` into ``base``, apply ``overrides``, check it."""
    from mixlab.config import read_yaml_mapping

    raw = read_yaml_mapping(path, "search spec")
    return parse_search_spec(raw, source=str(path), root=Path(path).parent, overrides=overrides)


def parse_search_spec(
    raw: Any,
    *,
    source: str = "<search spec>",
    root: Path | None = None,
    overrides: Iterable[str] = (),
) -> SearchSpec:
    """Check a spec mapping (as read from YAML); ``root`` resolves relative file paths."""
    from mixlab.config import apply_override, read_yaml_mapping

    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping with 'base', 'target', 'swarm', 'fit'")
    raw = copy.deepcopy(dict(raw))
    reject_unknown_keys(raw, _TOP_KEYS, source)
    base: dict[str, Any] = {}
    if raw.get("base_config"):
        cfg_path = _relative(raw.pop("base_config"), root)
        base = read_yaml_mapping(cfg_path, f"{source}: base_config")
    raw.pop("base_config", None)
    extra = raw.get("base") or {}
    if not isinstance(extra, Mapping):
        raise ConfigError(f"{source}: base: must be a mapping of run-config sections")
    merge_mappings(base, extra)
    raw["base"] = base
    for item in overrides:
        try:
            apply_override(raw, item)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from exc
    reject_unknown_keys(raw, _TOP_KEYS, source)  # an override may have added a key

    target = raw.get("target")
    if not isinstance(target, Mapping) or not target:
        raise ConfigError(
            f"{source}: target: required, the budget the mixture is for: "
            "{max_steps: N, tokens_per_step: T} | {tokens: N} | {config: run.yaml}"
        )
    target = dict(target)
    _check_target(target, source, root)
    name = raw.get("name") or (Path(source).stem if root is not None else "search")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: name: must be a non-empty string, got {name!r}")
    return SearchSpec(
        name=name,
        base=dict(raw["base"]),
        target=target,
        swarm=_swarm(_section(raw, "swarm", source), source),
        fit=_fit(_section(raw, "fit", source), source),
        eval=_eval(_section(raw, "eval", source), source),
        source=source,
    )


def merge_mappings(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Recursively merge ``extra`` into ``into`` (``extra`` wins; lists are replaced)."""
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            merge_mappings(into[k], v)
        else:
            into[k] = copy.deepcopy(v)


# ---------------------------------------------------------------------------- sections
def _check_target(target: dict[str, Any], source: str, root: Path | None) -> None:
    from mixlab.config import read_yaml_mapping

    reject_unknown_keys(target, _TARGET_KEYS, source, prefix="target.")
    forms = [k for k in ("max_steps", "tokens", "config") if k in target]
    if len(forms) != 1:
        raise ConfigError(
            f"{source}: target: give exactly one of max_steps (+ tokens_per_step), tokens or "
            f"config; got {', '.join(forms) or 'none of them'}"
        )
    if "tokens_per_step" in target and "max_steps" not in target:
        raise ConfigError(f"{source}: target.tokens_per_step: only goes with target.max_steps")
    for key in ("max_steps", "tokens_per_step", "tokens"):
        if key in target:
            _int(target[key], f"target.{key}", source, minimum=1)
    if "config" in target:
        cfg = target["config"]
        if isinstance(cfg, str):  # a file: keep its content, so the spec is self-contained
            target["config"] = read_yaml_mapping(_relative(cfg, root), f"{source}: target.config")
        elif not isinstance(cfg, Mapping):
            raise ConfigError(
                f"{source}: target.config: a run-config file path or mapping, got "
                f"{type(cfg).__name__}"
            )
        else:
            target["config"] = dict(cfg)


def _swarm(raw: dict[str, Any], source: str) -> SwarmSettings:
    s = SwarmSettings()
    reject_unknown_keys(raw, asdict(s), source, prefix="swarm.")
    if raw.get("runs") is not None:
        s.runs = _int(raw["runs"], "swarm.runs", source, minimum=0)
    prior = raw.get("prior", s.prior)
    if isinstance(prior, Mapping):
        s.prior = _number_map(prior, "swarm.prior", source, minimum=0.0)
    elif prior in PRIORS:
        s.prior = str(prior)
    else:
        raise ConfigError(
            f"{source}: swarm.prior: {prior!r} is not one of {', '.join(PRIORS)} or a mapping "
            "domain -> weight"
        )
    s.concentration = _float(raw.get("concentration", 1.0), "swarm.concentration", source)
    if not s.concentration > 0:
        raise ConfigError(f"{source}: swarm.concentration: must be > 0, got {s.concentration}")
    epochs = raw.get("max_epochs")
    if isinstance(epochs, Mapping):
        s.max_epochs = _number_map(epochs, "swarm.max_epochs", source, minimum=0.0)
    elif epochs is not None:
        s.max_epochs = _float(epochs, "swarm.max_epochs", source)
        if not s.max_epochs > 0:
            raise ConfigError(f"{source}: swarm.max_epochs: must be > 0, got {s.max_epochs}")
    s.seed = _int(raw.get("seed", 0), "swarm.seed", source, minimum=0)
    seeds = raw.get("proxy_seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        raise ConfigError(f"{source}: swarm.proxy_seeds: a list of distinct integers >= 0")
    s.proxy_seeds = [_int(x, "swarm.proxy_seeds", source, minimum=0) for x in seeds]
    s.corners = _bool(raw.get("corners", True), "swarm.corners", source)
    s.repetition_matching = _bool(
        raw.get("repetition_matching", True), "swarm.repetition_matching", source
    )
    return s


def _fit(raw: dict[str, Any], source: str) -> FitSettings:
    f = FitSettings()
    reject_unknown_keys(raw, asdict(f), source, prefix="fit.")
    f.law = str(raw.get("law", f.law))
    if f.law not in available_laws():
        raise ConfigError(
            f"{source}: fit.law: {f.law!r}; choose one of {', '.join(available_laws())}"
        )
    f.objective = str(raw.get("objective", f.objective))
    if f.objective not in OBJECTIVES:
        raise ConfigError(
            f"{source}: fit.objective: {f.objective!r}; choose one of {', '.join(OBJECTIVES)}"
        )
    weights = raw.get("objective_weights")
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise ConfigError(f"{source}: fit.objective_weights: a mapping domain -> weight")
        f.objective_weights = _number_map(weights, "fit.objective_weights", source, minimum=0.0)
    if f.objective == "weighted" and not f.objective_weights:
        raise ConfigError(
            f"{source}: fit.objective_weights: objective=weighted needs a weight per "
            "evaluation domain, e.g. {code: 2, prose: 1}"
        )
    f.kl_weight = _float(raw.get("kl_weight", 0.0), "fit.kl_weight", source)
    if f.kl_weight < 0:
        raise ConfigError(f"{source}: fit.kl_weight: must be >= 0, got {f.kl_weight}")
    region = raw.get("trust_region", "median")
    if region is not None and region not in ("median", "max"):
        region = _float(region, "fit.trust_region", source)
        if region < 0:
            raise ConfigError(
                f"{source}: fit.trust_region: median, max, a KL radius >= 0 (nats) or null, "
                f"got {region}"
            )
    f.trust_region = region
    f.bootstrap = _int(raw.get("bootstrap", f.bootstrap), "fit.bootstrap", source, minimum=0)
    f.bootstrap_level = _float(raw.get("bootstrap_level", 0.9), "fit.bootstrap_level", source)
    if not 0 < f.bootstrap_level < 1:
        raise ConfigError(
            f"{source}: fit.bootstrap_level: must be in (0, 1), got {f.bootstrap_level}"
        )
    if raw.get("cv_folds") is not None:
        f.cv_folds = _int(raw["cv_folds"], "fit.cv_folds", source, minimum=2)
    f.min_spearman = _float(raw.get("min_spearman", 0.7), "fit.min_spearman", source)
    f.min_objective_r2 = _float(raw.get("min_objective_r2", 0.5), "fit.min_objective_r2", source)
    return f


def _eval(raw: dict[str, Any], source: str) -> EvalSettings:
    e = EvalSettings()
    reject_unknown_keys(raw, asdict(e), source, prefix="eval.")
    e.every = _int(raw.get("every", 0), "eval.every", source, minimum=0)
    domains = raw.get("domains")
    if domains is not None:
        if (
            not isinstance(domains, list)
            or not domains
            or not all(isinstance(d, str) for d in domains)
            or len(set(domains)) != len(domains)
        ):
            raise ConfigError(f"{source}: eval.domains: a list of distinct domain names")
        e.domains = list(domains)
    return e


# ---------------------------------------------------------------------------- helpers
def _section(raw: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: {key}: must be a mapping, got {type(value).__name__}")
    return dict(value)


def _relative(path: Any, root: Path | None) -> Path:
    p = Path(str(path))
    return root / p if root is not None and not p.is_absolute() else p


def _int(value: Any, name: str, source: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{source}: {name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float(value: Any, name: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{source}: {name}: must be a number, got {value!r}")
    return float(value)


def _bool(value: Any, name: str, source: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{source}: {name}: must be true or false, got {value!r}")
    return value


def _number_map(
    raw: Mapping[str, Any], name: str, source: str, *, minimum: float
) -> dict[str, float]:
    out = {}
    for key, value in raw.items():
        v = _float(value, f"{name}.{key}", source)
        if v < minimum:
            raise ConfigError(f"{source}: {name}.{key}: must be >= {minimum}, got {v}")
        out[str(key)] = v
    if not out:
        raise ConfigError(f"{source}: {name}: an empty mapping; name at least one domain")
    return out
