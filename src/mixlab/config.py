"""Typed run configuration: pydantic models are the source of truth, YAML is their serialisation.

A run is described by :class:`RunConfig` with six sections (``data``, ``model``, ``mixing``,
``train``, ``eval``, ``meco``). Every field carries its type, range and help text (unit, meaning,
default), which ``mixlab train --help-config`` prints. Recipes live in ``configs/*.yaml``; the CLI
only overrides (``--set train.max_steps=200 mixing.name=uniform``). Values given with ``--set``
are parsed as YAML scalars, so ``1e-3``, ``true`` and ``{web: 0.5, code: 0.5}`` work.

``mixing`` is tagged by the policy name: its options class comes from the policy registry
(:func:`mixlab.mixing.base.parse_mixing`), so a resolved config holds only the chosen policy's
options (``mixing.odm.*`` for ``odm``, ``mixing.acodm.*`` for ``acodm``, nothing more for
``uniform``) and options of another policy are an error, never silently ignored.

Field types and ranges are checked when a config is built (pydantic, :mod:`mixlab.schema`); the
rules that span fields or need the store are in :meth:`RunConfig.validate`. Errors name the
field, the bad value and what is allowed. The resolved config is saved as ``config.yaml`` in
every run folder so any run can be reproduced from its folder alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, SerializeAsAny, field_validator

from mixlab.errors import ConfigError
from mixlab.files import write_text
from mixlab.mixing.base import MixingOptions, describe_policies, options_class, parse_mixing
from mixlab.schema import Float, Int, Section, Str, describe


class DataConfig(Section):
    where: ClassVar[str] = "data"

    store: Str = Field("", description="Path of a shard store made by `mixlab prepare` (required).")
    seq_len: Int = Field(128, ge=2, description="Tokens per training sequence (packed window).")
    subsample: Float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fraction in (0, 1] of each domain's training documents this run sees (whole "
        "documents, an index over the store, never a copy). `mixlab search` sets it to proxy "
        "budget / target budget, so a proxy repeats every domain as often as the target will "
        "(repetition matching, METHODS.md §7).",
    )
    subsample_seed: Int = Field(
        0, description="Seed of the document subsample (the same for every run)."
    )


class ModelConfig(Section):
    where: ClassVar[str] = "model"

    preset: Str | None = Field(
        "llama-tiny",
        description="Named model preset (see `mixlab train --help-config`); null to use another "
        "source.",
    )
    config_path: Str | None = Field(
        None, description="A Hugging Face config.json to build a random-init model from."
    )
    pretrained_path: Str | None = Field(
        None, description="A local Hugging Face model folder to start from."
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Extra HF config fields, e.g. {num_hidden_layers: 4}."
    )


class TrainConfig(Section):
    where: ClassVar[str] = "train"

    max_steps: Int = Field(300, ge=1, description="Optimiser steps T.")
    batch_size: Int = Field(16, ge=1, description="Sequences per micro-batch (per process).")
    grad_accum: Int = Field(1, ge=1, description="Micro-batches per optimiser step.")
    lr: Float = Field(3e-3, gt=0, allow_inf_nan=False, description="Peak learning rate (AdamW).")
    min_lr_ratio: Float = Field(
        0.1, ge=0, le=1, description="Final LR of the cosine schedule as a fraction of lr."
    )
    warmup_steps: Int = Field(30, ge=0, description="Linear LR warm-up steps.")
    schedule_steps: Int | None = Field(
        None,
        ge=1,
        description="Horizon of the LR schedule (null: max_steps). A trunk for branch_from "
        "trains max_steps=b with schedule_steps=T: its LR at every step is the T-step run's.",
    )
    branch_from: Str | None = Field(
        None,
        description="A finished trunk run (folder or checkpoint) of the same model, data and "
        "train settings with schedule_steps = this run's max_steps: this run starts at its step "
        "b (model, optimiser, LR schedule, data position) with its own mixing policy. Arms "
        "branched from one trunk share their first b steps and the seed noise those set "
        "(mixlab.train.branch).",
    )
    weight_decay: Float = Field(
        0.1, ge=0, description="AdamW weight decay (matrices only; not biases/norms)."
    )
    beta1: Float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    beta2: Float = Field(0.95, ge=0, lt=1, description="AdamW beta2.")
    max_nonfinite_steps: Int = Field(
        5,
        ge=1,
        description="A step whose loss or gradient is not finite is skipped (no update) and "
        "counted; this many in a row stop the run with an error (diverged), keeping the last "
        "checkpoint.",
    )
    grad_clip: Float = Field(
        1.0, ge=0, description="Max global gradient norm; 0 disables clipping."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="auto (bf16 on GPUs; on CPUs with native bf16 only for models >= 192 wide, "
        "where it is faster; else fp32) | bf16 | fp32.",
    )
    seed: Int = Field(0, description="Seed for model init, sampler and policy.")
    threads: Int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default.")
    tune_malloc: bool = Field(
        True,
        description="On the CPU, raise glibc malloc's mmap/trim thresholds for the process so "
        "each step reuses freed memory instead of page-faulting it in again (14-36% shorter "
        "steps, ~100 MB more resident memory; mixlab.train.allocator).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto (CUDA when available, else CPU) | cpu | cuda."
    )
    distributed: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="Under torchrun: auto = ddp | ddp (DistributedDataParallel) | fsdp (FSDP2 "
        "fully_shard of every block and the root). Ignored in a single process.",
    )
    log_every: Int = Field(10, ge=0, description="Steps between train log lines in metrics.jsonl.")
    eval_every: Int = Field(
        100, ge=0, description="Steps between validation passes; 0 = only at the end."
    )
    checkpoint_every: Int = Field(
        100, ge=0, description="Steps between checkpoints; 0 = only at the end."
    )
    tensorboard: bool = Field(
        False, description="Also write TensorBoard events (needs mixlab[tensorboard])."
    )
    progress: bool = Field(True, description="Show a progress bar.")

    @property
    def schedule_horizon(self) -> int:
        """Steps the LR schedule spans: ``schedule_steps``, else ``max_steps``."""
        return self.schedule_steps or self.max_steps


class EvalConfig(Section):
    where: ClassVar[str] = "eval"

    max_tokens_per_domain: Int = Field(
        100_000, ge=1, description="Validation tokens per domain (cap)."
    )
    batch_size: Int = Field(32, ge=1, description="Sequences per evaluation batch.")
    document_modes: list[Str] = Field(
        default_factory=list,
        description="Extra per-document evals at every eval step (MeCo, METHODS.md §4): any of "
        "uncond | cond_true (each document's own prefix) | cond_fixed (eval.fixed_prefix); "
        "logged as eval_<mode>/... and scored on the same document tokens in every mode.",
    )
    fixed_prefix: Str = Field(
        "", description="Prefix text of the cond_fixed mode, e.g. 'URL: en.wikipedia.org\\n\\n'."
    )

    @field_validator("document_modes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # --set eval.document_modes=uncond,cond_true
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class MecoConfig(Section):
    """Metadata conditioning then cooldown (arXiv 2501.01956); see mixlab.model.meco."""

    where: ClassVar[str] = "meco"

    enabled: bool = Field(
        False, description="Prepend each document's metadata prefix, then cool down."
    )
    cooldown_fraction: Float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of the run trained on plain documents at the end: conditioning covers "
        "steps 1..s_c, s_c = floor((1 - cooldown_fraction) * max_steps). 0 = never cool down; "
        "1 = plain document packing throughout (a control).",
    )
    metadata_template: Str = Field(
        "URL: {host}\n\n",
        description="Prefix template; {host} (or {value}) is the variant's value.",
    )
    metadata_variant: Str = Field(
        "host",
        description="Value put in the template: host | full_url | registered_domain | suffix | "
        "hashed | fixed | field.",
    )
    fixed_value: Str = Field(
        "example.com", description="The constant value of metadata_variant=fixed."
    )
    missing_metadata: Str = Field(
        "skip_prefix",
        description="A document without metadata: skip_prefix (no prefix; counted) | error | "
        "use_domain_name.",
    )
    mask_metadata: bool = Field(
        True, description="Exclude BOS and prefix tokens from the loss (false = an ablation)."
    )
    packing: Str = Field(
        "doc_masked",
        description="doc_masked (block-diagonal attention, positions restart per document; falls "
        "back to pad if the model cannot) | pad (one document per sequence) | concat (no "
        "isolation).",
    )
    fill: Str = Field(
        "split",
        description="split (a document cut at the end of a sequence continues, with its prefix, "
        "in the next) | complete (a document that does not fit starts a new sequence; release).",
    )
    max_prefix_tokens: Int = Field(
        32,
        ge=1,
        description="Longest allowed prefix in tokens; documents are cut into pieces of "
        "seq_len - BOS - max_prefix_tokens tokens so every piece fits with its prefix.",
    )


class RunConfig(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    mixing: SerializeAsAny[MixingOptions] = Field(default_factory=lambda: parse_mixing(None))
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    meco: MecoConfig = Field(default_factory=MecoConfig)

    @field_validator("mixing", mode="before")
    @classmethod
    def _tagged(cls, value: Any) -> MixingOptions:
        return parse_mixing(value)  # the chosen policy's own options class

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> RunConfig:
        """Build from a mapping (types and ranges checked; see :meth:`validate` for the rest)."""
        raw = dict(_migrate(raw or {}))
        mixing = raw.pop("mixing", None)
        cfg = cls.parse(raw)
        cfg.mixing = parse_mixing(mixing)
        return cfg

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
        return self.model_dump(mode="python")

    def save(self, path: str | Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:  # type: ignore[override]
        """The rules that span fields or sections (types and ranges are checked on build)."""
        self._validate_meco()
        ev = self.eval
        if ev.max_tokens_per_domain < self.data.seq_len:
            raise ConfigError(
                f"eval.max_tokens_per_domain={ev.max_tokens_per_domain} is below one window "
                f"(data.seq_len={self.data.seq_len}); raise it to at least {self.data.seq_len}"
            )
        sources = [
            s for s in ("preset", "config_path", "pretrained_path") if getattr(self.model, s)
        ]
        if len(sources) != 1:
            raise ConfigError(
                "model: set exactly one of model.preset, model.config_path, model.pretrained_path "
                f"(got {', '.join(sources) or 'none'}); e.g. --set model.preset=null "
                "model.config_path=my_config.json"
            )
        t = self.train
        if t.schedule_steps is not None and t.schedule_steps < t.max_steps:
            raise ConfigError(
                f"train.schedule_steps={t.schedule_steps} ends the LR schedule before "
                f"train.max_steps={t.max_steps}; give at least max_steps (or null)"
            )
        if t.branch_from is not None and self.meco.enabled:
            raise ConfigError(
                "train.branch_from: MeCo runs cannot branch (their document sampler and "
                "cooldown are not part of a trunk); train them from the start"
            )

    def _validate_meco(self) -> None:
        # These choices live with MeCo's code (imported here, not at module import).
        from mixlab.data.metadata import VARIANTS, render_prefix
        from mixlab.model.meco import EVAL_MODES, FILLS, MISSING_METADATA, PACKINGS

        mc, ev = self.meco, self.eval
        _choice("meco.metadata_variant", mc.metadata_variant, VARIANTS)
        _choice("meco.missing_metadata", mc.missing_metadata, MISSING_METADATA)
        _choice("meco.packing", mc.packing, PACKINGS)
        _choice("meco.fill", mc.fill, FILLS)
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

    * 0.1 saved every policy's options with every run (``mixing.odm``, ``.doremi`` and
      ``.acodm`` all present): only the chosen policy's options are kept.
    * 0.1.0 kept the AC-ODM policy file paths in ``mixing.acodm.policy_in/policy_out``; they
      are ``mixing.policy_in/policy_out`` now.
    """
    mixing = raw.get("mixing")
    if not isinstance(mixing, Mapping):
        return raw
    mixing = dict(mixing)
    acodm = mixing.get("acodm")
    if isinstance(acodm, Mapping) and {"policy_in", "policy_out"} & set(acodm):
        moved = {k: v for k, v in acodm.items() if k in ("policy_in", "policy_out")}
        mixing["acodm"] = {k: v for k, v in acodm.items() if k not in moved}
        for key, value in moved.items():
            if value is not None and mixing.get(key) is None:
                mixing[key] = value
    if {"odm", "doremi", "acodm"} <= set(mixing):  # a 0.1 resolved config
        name = mixing.get("name", "natural")
        own = options_class(name if isinstance(name, str) else "natural").model_fields
        mixing = {k: v for k, v in mixing.items() if k in own}
    return {**raw, "mixing": mixing}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


def saved_config(raw: Mapping[str, Any]) -> RunConfig:
    """A config saved whole in a run folder (``config.yaml``, ``planned_config.yaml``, a
    checkpoint) by this or an earlier mixlab, with the behaviour it was run with.

    Fields added since take their defaults, except where a new default changes what an old
    run did: a saved AC-ODM section without ``variant`` was run before the mixlab variant
    existed, so it is ``variant: paper`` (a resumed or compared old run stays the paper's).
    Recipes are not saved configs: there a missing ``variant`` means the default.
    """
    mixing = raw.get("mixing")
    if isinstance(mixing, Mapping) and mixing.get("name") == "acodm":
        acodm = mixing.get("acodm")
        if isinstance(acodm, Mapping) and "variant" not in acodm:
            raw = {**raw, "mixing": {**mixing, "acodm": {**acodm, "variant": "paper"}}}
    return RunConfig.from_dict(raw)


def resolved(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A saved config as this mixlab resolves it (:func:`saved_config`): fields added since it
    was saved take their defaults. Run folders are compared this way, so a new option (at its
    default) does not make every earlier folder "made with other settings". A config this
    version cannot read is returned as it is (and then differs)."""
    try:
        return saved_config(raw).to_dict()
    except ConfigError:
        return dict(raw)


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


def describe_fields() -> str:
    """A human-readable list of every field with its default and help text, and the policies."""
    text = describe(RunConfig)
    mixing = describe(MixingOptions, prefix="mixing.")
    return text.replace("\n[mixing]\n", f"\n[mixing]\n{mixing}\n", 1) + describe_policies()
