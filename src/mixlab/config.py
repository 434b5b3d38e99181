"""Typed run configuration: dataclasses are the source of truth, YAML is their serialisation.

A run is described by :class:`RunConfig` with six sections (``data``, ``model``, ``mixing``,
``train``, ``eval``, ``meco``). Every field carries a ``help`` text (unit, meaning, default) that
``mixlab train --help-config`` prints. Recipes live in ``configs/*.yaml``; the CLI only
overrides (``--set train.max_steps=200 mixing.name=uniform``). Values given with ``--set`` are
parsed as YAML scalars, so ``1e-3``, ``true`` and ``{web: 0.5, code: 0.5}`` work.

Validation happens once, up front, in :meth:`RunConfig.validate`; errors name the field, the
bad value and what is allowed. The resolved config is saved as ``config.yaml`` in every run
folder so any run can be reproduced from its folder alone.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixlab.errors import ConfigError
from mixlab.files import write_text
from mixlab.mixing.acodm.options import AcodmOptions


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class DataConfig:
    store: str = _f("", "Path of a shard store made by `mixlab prepare` (required).")
    seq_len: int = _f(128, "Tokens per training sequence (packed window).")
    subsample: float = _f(
        1.0,
        "Fraction in (0, 1] of each domain's training documents this run sees (whole "
        "documents, an index over the store, never a copy). `mixlab search` sets it to proxy "
        "budget / target budget, so a proxy repeats every domain as often as the target will "
        "(repetition matching, METHODS.md §7).",
    )
    subsample_seed: int = _f(0, "Seed of the document subsample (the same for every run).")


@dataclass
class ModelConfig:
    preset: str | None = _f(
        "llama-tiny",
        "Named model preset (see `mixlab train --help-config`); null to use another source.",
    )
    config_path: str | None = _f(
        None, "A Hugging Face config.json to build a random-init model from."
    )
    pretrained_path: str | None = _f(None, "A local Hugging Face model folder to start from.")
    overrides: dict[str, Any] = _f({}, "Extra HF config fields, e.g. {num_hidden_layers: 4}.")


@dataclass
class OdmConfig:
    """Online data mixing (arXiv 2312.02406), policies ``odm`` (EXP3) and ``odm-smoothed``."""

    alpha: float = _f(
        0.9, "EMA factor of the per-domain reward estimate (0.5 in some release scripts)."
    )
    warmup_steps: int = _f(
        -1, "Steps on the initial mixture before the bandit updates; -1 = max(20, 2% of T)."
    )
    initial: str = _f("natural", "Mixture used during warm-up: natural | uniform.")
    reward_scale: float = _f(
        1.0, "Scale s of the importance-weighted reward s*loss/pi (exp3 only)."
    )
    accumulate: str = _f(
        "ema", "exp3 reward estimate: ema (paper) | sum (textbook EXP3 in the release)."
    )
    temperature_eps: str = _f(
        "schedule", "exp3 softmax temperature: schedule (eps_{t-1}) | last_update (release)."
    )
    constant_eps: float | None = _f(None, "Fixed exploration rate instead of the schedule (tests).")


@dataclass
class DoremiConfig:
    """DoReMi (arXiv 2305.10429): `mixlab doremi` (offline) and policy ``doremi-online``."""

    eta: float = _f(
        1.0, "Group-DRO step size: log alpha += eta * excess loss (0.1 if alpha collapses)."
    )
    smoothing: float = _f(
        1e-3, "Mix c of the uniform distribution into alpha each step; every alpha_i >= c/K."
    )
    reference: str | None = _f(
        None,
        "Run folder or checkpoint of a trained reference model (same tokenizer). Required by "
        "doremi-online; for `mixlab doremi` it is reused instead of training round 1's reference.",
    )
    reference_mixture: str = _f(
        "natural", "Mixture the reference model is trained on: natural | uniform."
    )
    rounds: int = _f(1, "Max DoReMi rounds; round k+1 trains its reference on round k's weights.")
    tol: float = _f(
        0.01, "Stop iterating when the L1 change of the averaged weights between rounds < tol."
    )
    loss_normalizer: str = _f(
        "per_domain",
        "Proxy loss: per_domain (sum_i alpha_i * domain-mean loss; paper) | token_weighted "
        "(sum_i alpha_i loss_sum_i / sum_i alpha_i n_i; release).",
    )
    alpha_timing: str = _f(
        "exact",
        "exact (forward all micro-batches, update alpha, then backward) | lagged (weight by "
        "the previous alpha; backward per micro-batch; release behaviour, less memory).",
    )
    proxy_sampling: str = _f(
        "stratified",
        "Proxy batches: stratified (B/K sequences per domain per step) | random (i.i.d. "
        "uniform; release).",
    )
    lambda_init: str = _f(
        "zero", "lambda_0 of absent domains: zero | log_vocab (release; offline only)."
    )
    reference_steps: int = _f(0, "Optimiser steps of each reference run; 0 = train.max_steps.")
    proxy_steps: int = _f(0, "Optimiser steps of each proxy run; 0 = train.max_steps.")


@dataclass
class MixingConfig:
    name: str = _f(
        "natural",
        "Mixing policy: uniform | natural | temperature | fixed | odm | odm-smoothed | acodm "
        "| doremi-online.",
    )
    update_every: int = _f(1, "Steps between reading new weights from the policy.")
    sampling: str = _f(
        "mixed",
        "How a step's sequences get domains: mixed (i.i.d. per sequence), stratified "
        "(exact shares per step), homogeneous (one domain per micro-batch).",
    )
    temperature: float = _f(1.0, "For name=temperature: weights ∝ natural^(1/T); T>0.")
    weights: dict[str, float] | None = _f(None, "For name=fixed: domain -> weight (must sum to 1).")
    weights_file: str | None = _f(
        None, "For name=fixed: JSON file domain -> weight (e.g. DoReMi output)."
    )
    policy_out: str | None = _f(
        None,
        "Write the learned policy to this file at each checkpoint and at the end (acodm: a "
        "portable *.acodm.pt actor for a bigger target run).",
    )
    policy_in: str | None = _f(
        None,
        "Start from a saved policy file (acodm: drive this run with a proxy's actor, frozen "
        "unless mixing.acodm.mode=online).",
    )
    odm: OdmConfig = field(default_factory=OdmConfig)
    doremi: DoremiConfig = field(default_factory=DoremiConfig)
    acodm: AcodmOptions = field(default_factory=AcodmOptions)


@dataclass
class TrainConfig:
    max_steps: int = _f(300, "Optimiser steps T.")
    batch_size: int = _f(16, "Sequences per micro-batch (per process).")
    grad_accum: int = _f(1, "Micro-batches per optimiser step.")
    lr: float = _f(3e-3, "Peak learning rate (AdamW).")
    min_lr_ratio: float = _f(0.1, "Final LR of the cosine schedule as a fraction of lr.")
    warmup_steps: int = _f(30, "Linear LR warm-up steps.")
    weight_decay: float = _f(0.1, "AdamW weight decay (matrices only; not biases/norms).")
    beta1: float = _f(0.9, "AdamW beta1.")
    beta2: float = _f(0.95, "AdamW beta2.")
    grad_clip: float = _f(1.0, "Max global gradient norm; 0 disables clipping.")
    precision: str = _f(
        "auto",
        "auto (bf16 on GPUs; on CPUs with native bf16 only for models >= 192 wide, where it "
        "is faster; else fp32) | bf16 | fp32.",
    )
    seed: int = _f(0, "Seed for model init, sampler and policy.")
    threads: int = _f(0, "torch intra-op threads; 0 keeps torch's default.")
    device: str = _f("auto", "auto (CUDA when available, else CPU) | cpu | cuda.")
    distributed: str = _f(
        "auto",
        "Under torchrun: auto = ddp | ddp (DistributedDataParallel) | fsdp (FSDP2 "
        "fully_shard of every block and the root). Ignored in a single process.",
    )
    log_every: int = _f(10, "Steps between train log lines in metrics.jsonl.")
    eval_every: int = _f(100, "Steps between validation passes; 0 = only at the end.")
    checkpoint_every: int = _f(100, "Steps between checkpoints; 0 = only at the end.")
    tensorboard: bool = _f(False, "Also write TensorBoard events (needs mixlab[tensorboard]).")
    progress: bool = _f(True, "Show a progress bar.")


@dataclass
class EvalConfig:
    max_tokens_per_domain: int = _f(100_000, "Validation tokens per domain (cap).")
    batch_size: int = _f(32, "Sequences per evaluation batch.")
    document_modes: list[str] = _f(
        [],
        "Extra per-document evals at every eval step (MeCo, METHODS.md §4): any of uncond | "
        "cond_true (each document's own prefix) | cond_fixed (eval.fixed_prefix); logged as "
        "eval_<mode>/... and scored on the same document tokens in every mode.",
    )
    fixed_prefix: str = _f(
        "", "Prefix text of the cond_fixed mode, e.g. 'URL: en.wikipedia.org\\n\\n'."
    )


@dataclass
class MecoConfig:
    """Metadata conditioning then cooldown (arXiv 2501.01956); see mixlab.model.meco."""

    enabled: bool = _f(False, "Prepend each document's metadata prefix, then cool down.")
    cooldown_fraction: float = _f(
        0.1,
        "Share of the run trained on plain documents at the end: conditioning covers steps "
        "1..s_c, s_c = floor((1 - cooldown_fraction) * max_steps). 0 = never cool down; "
        "1 = plain document packing throughout (a control).",
    )
    metadata_template: str = _f(
        "URL: {host}\n\n", "Prefix template; {host} (or {value}) is the variant's value."
    )
    metadata_variant: str = _f(
        "host",
        "Value put in the template: host | full_url | registered_domain | suffix | hashed | "
        "fixed | field.",
    )
    fixed_value: str = _f("example.com", "The constant value of metadata_variant=fixed.")
    missing_metadata: str = _f(
        "skip_prefix",
        "A document without metadata: skip_prefix (no prefix; counted) | error | use_domain_name.",
    )
    mask_metadata: bool = _f(
        True, "Exclude BOS and prefix tokens from the loss (false = an ablation)."
    )
    packing: str = _f(
        "doc_masked",
        "doc_masked (block-diagonal attention, positions restart per document; falls back to "
        "pad if the model cannot) | pad (one document per sequence) | concat (no isolation).",
    )
    fill: str = _f(
        "split",
        "split (a document cut at the end of a sequence continues, with its prefix, in the "
        "next) | complete (a document that does not fit starts a new sequence; release).",
    )
    max_prefix_tokens: int = _f(
        32,
        "Longest allowed prefix in tokens; documents are cut into pieces of "
        "seq_len - BOS - max_prefix_tokens tokens so every piece fits with its prefix.",
    )


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    meco: MecoConfig = field(default_factory=MecoConfig)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> RunConfig:
        return typing.cast(RunConfig, _build(cls, _migrate(raw or {}), prefix=""))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunConfig:
        """Read a YAML recipe (optional), apply ``a.b=c`` overrides, validate."""
        raw = read_yaml_mapping(path, "config file") if path is not None else {}
        for item in overrides:
            apply_override(raw, item)
        cfg = cls.from_dict(raw)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        t, m = self.train, self.mixing
        _positive("data.seq_len", self.data.seq_len, minimum=2)
        if not 0 < self.data.subsample <= 1:
            raise ConfigError(f"data.subsample: must be in (0, 1], got {self.data.subsample}")
        for name in ("max_steps", "batch_size", "grad_accum"):
            _positive(f"train.{name}", getattr(t, name))
        for name in ("warmup_steps", "log_every", "eval_every", "checkpoint_every", "threads"):
            _positive(f"train.{name}", getattr(t, name), minimum=0)
        if not (t.lr > 0 and math.isfinite(t.lr)):
            raise ConfigError(f"train.lr: must be a positive number, got {t.lr}")
        if not 0 <= t.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio: must be in [0, 1], got {t.min_lr_ratio}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(t, name) < 1:
                raise ConfigError(f"train.{name}: must be in [0, 1), got {getattr(t, name)}")
        if t.grad_clip < 0 or t.weight_decay < 0:
            raise ConfigError("train.grad_clip and train.weight_decay must be >= 0")
        _choice("train.precision", t.precision, ("auto", "bf16", "fp32"))
        _choice("train.device", t.device, ("auto", "cpu", "cuda"))
        _choice("train.distributed", t.distributed, ("auto", "ddp", "fsdp"))
        _choice("mixing.sampling", m.sampling, ("mixed", "stratified", "homogeneous"))
        from mixlab.mixing.base import available_policies  # imports the policy modules

        _choice("mixing.name", m.name, available_policies())
        _positive("mixing.update_every", m.update_every)
        if not m.temperature > 0:
            raise ConfigError(f"mixing.temperature: must be > 0, got {m.temperature}")
        _positive("eval.max_tokens_per_domain", self.eval.max_tokens_per_domain)
        _positive("eval.batch_size", self.eval.batch_size)
        self._validate_meco()
        sources = [
            s for s in ("preset", "config_path", "pretrained_path") if getattr(self.model, s)
        ]
        if len(sources) != 1:
            raise ConfigError(
                "model: set exactly one of model.preset, model.config_path, model.pretrained_path "
                f"(got {', '.join(sources) or 'none'}); e.g. --set model.preset=null "
                "model.config_path=my_config.json"
            )

    def _validate_meco(self) -> None:
        from mixlab.data.metadata import VARIANTS, render_prefix
        from mixlab.model.meco import EVAL_MODES, FILLS, MISSING_METADATA, PACKINGS

        mc, ev = self.meco, self.eval
        if not 0.0 <= mc.cooldown_fraction <= 1.0:
            raise ConfigError(
                f"meco.cooldown_fraction: must be in [0, 1], got {mc.cooldown_fraction}"
            )
        _choice("meco.metadata_variant", mc.metadata_variant, VARIANTS)
        _choice("meco.missing_metadata", mc.missing_metadata, MISSING_METADATA)
        _choice("meco.packing", mc.packing, PACKINGS)
        _choice("meco.fill", mc.fill, FILLS)
        _positive("meco.max_prefix_tokens", mc.max_prefix_tokens)
        render_prefix("https://example.com/", template=mc.metadata_template)  # names the field
        for mode in ev.document_modes:
            _choice("eval.document_modes", mode, EVAL_MODES)
        if "cond_fixed" in ev.document_modes and not ev.fixed_prefix:
            raise ConfigError(
                "eval.document_modes has cond_fixed but eval.fixed_prefix is empty; set e.g. "
                "eval.fixed_prefix='URL: en.wikipedia.org\\n\\n'"
            )
        if (mc.enabled or ev.document_modes) and self.data.seq_len - 1 - mc.max_prefix_tokens < 2:
            raise ConfigError(
                f"data.seq_len={self.data.seq_len} is too short for MeCo with "
                f"meco.max_prefix_tokens={mc.max_prefix_tokens}: documents need at least 2 "
                "tokens after BOS and the prefix; raise data.seq_len or lower max_prefix_tokens"
            )


def _migrate(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """Read configs saved by earlier mixlab versions (run folders, recipes).

    0.1.0 kept the AC-ODM policy file paths in ``mixing.acodm.policy_in/policy_out``; they are
    ``mixing.policy_in/policy_out`` now.
    """
    mixing = raw.get("mixing")
    acodm = mixing.get("acodm") if isinstance(mixing, Mapping) else None
    if not (isinstance(acodm, Mapping) and {"policy_in", "policy_out"} & set(acodm)):
        return raw
    assert isinstance(mixing, Mapping)
    moved = {k: v for k, v in acodm.items() if k in ("policy_in", "policy_out")}
    new_mixing = {**mixing, "acodm": {k: v for k, v in acodm.items() if k not in moved}}
    for key, value in moved.items():
        if value is not None and new_mixing.get(key) is None:
            new_mixing[key] = value
    return {**raw, "mixing": new_mixing}


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{name}: must be an integer >= {minimum}, got {value}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


# -------------------------------------------------------------------- dict -> dataclass
def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = prefix or "config"
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        key = f"{prefix}{name}"
        kwargs[name] = _coerce(hints[name], raw[name], key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, prefix=f"{key}.")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if isinstance(value, str):  # --set eval.document_modes=uncond,cond_true
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, e.g. [a, b], got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it means.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def read_yaml_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    """A YAML file that holds a mapping (an empty file is ``{}``); ConfigError naming it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p}: expected a mapping, got {type(loaded).__name__}")
    return loaded or {}


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``a.b=c`` override in place; ``c`` is parsed as a YAML value."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.field=value, e.g. train.max_steps=200")
    dotted, text = item.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"--set {item!r}: name a section and a field, e.g. mixing.name=uniform")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    set_path(raw, parts, value, where=f"--set {item!r}")


def set_path(raw: dict[str, Any], parts: Sequence[str], value: Any, *, where: str) -> None:
    """``raw[a][b]... = value`` for the path ``parts``, creating sections on the way."""
    node = raw
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {p} is not a section")
        node = child
    node[parts[-1]] = value


def describe_fields(cls: type = RunConfig, prefix: str = "") -> str:
    """A human-readable list of every field with its default and help text."""
    lines = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            lines.append(f"\n[{prefix}{f.name}]")
            lines.append(describe_fields(tp, prefix=f"{prefix}{f.name}."))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {prefix}{f.name} = {default!r}\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)
