"""Build the language model a run trains: a Hugging Face causal LM from one of three sources.

Exactly one source is chosen (config fields ``model.preset`` / ``model.config_path`` /
``model.pretrained_path``):

* **preset** — a small named architecture from :data:`PRESETS` (Pythia-style GPT-NeoX or
  Llama-style), randomly initialised;
* **config_path** — a Hugging Face ``config.json`` (or a folder holding one), randomly
  initialised;
* **pretrained_path** — a local model folder saved with ``save_pretrained`` (weights loaded;
  nothing is ever downloaded).

Rules that hold for every source:

* The vocabulary follows the tokenizer of the shard store: ``vocab_size`` replaces the preset's
  or config file's value. A pretrained model whose vocabulary differs is refused
  (:class:`~mixlab.errors.ConfigError`): its embedding rows would not match the token ids.
* ``eos_token_id`` / ``bos_token_id`` come from the tokenizer; ``pad_token_id`` = EOS (packed
  training never pads, generation needs some id).
* Random init is deterministic given ``seed`` and leaves the caller's global RNG untouched
  (``torch.random.fork_rng``).
* Weights are fp32 (mixed precision is the loop's autocast, not the storage dtype); attention
  uses PyTorch SDPA when the architecture supports it, else the eager implementation;
  ``use_cache`` is off because training and scoring never reuse key/value caches.

Presets tie the input embedding and the output head (``tie_word_embeddings=True``): at these
sizes an untied head would add ``vocab × hidden`` parameters — as many as the whole embedding,
which already dominates the smaller presets. Sizes (real counts, embedding included):

============  =======  ======  ======  =====  ======  ===========  ============
name          family   hidden  layers  heads  ffn     vocab 8192   vocab 16384
============  =======  ======  ======  =====  ======  ===========  ============
neox-tiny     gpt_neox     32       2      2     128      0.29 M        0.55 M
neox-1m       gpt_neox     64       8      4     256      0.92 M        1.45 M
neox-5m       gpt_neox    192       8      6     768      5.13 M        6.71 M
neox-20m      gpt_neox    384      10      6    1536     20.89 M       24.04 M
llama-tiny    llama        32       2      2      88      0.29 M        0.55 M
llama-1m      llama        64       8      4     176      0.93 M        1.45 M
llama-5m      llama       192       8      6     512      5.12 M        6.69 M
llama-20m     llama       384      10      6    1024     20.85 M       23.99 M
============  =======  ======  ======  =====  ======  ===========  ============

GPT-NeoX presets follow Pythia (LayerNorm, GELU MLP of 4×hidden, parallel residual, rotary on
25% of each head); Llama presets use RMSNorm, a SwiGLU MLP of ≈8/3×hidden (rounded to a
multiple of 8, so both families have about the same size) and full rotary. ``overrides`` set any
field of the Hugging Face config by its HF name (``hidden_size``, ``num_hidden_layers``,
``tie_word_embeddings``, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mixlab.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

logger = logging.getLogger(__name__)


def _preset_row(
    family: str, hidden: int, layers: int, heads: int, intermediate: int, params_at_8k: int
) -> dict[str, Any]:
    return dict(
        family=family,
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        max_position=2048,
        tie_embeddings=True,
        params_at_8k=params_at_8k,  # real count at vocab 8192 (a test checks it)
    )


PRESETS: dict[str, dict[str, Any]] = {
    "neox-tiny": _preset_row("gpt_neox", 32, 2, 2, 128, 287_616),
    "neox-1m": _preset_row("gpt_neox", 64, 8, 4, 256, 924_288),
    "neox-5m": _preset_row("gpt_neox", 192, 8, 6, 768, 5_132_160),
    "neox-20m": _preset_row("gpt_neox", 384, 10, 6, 1536, 20_891_136),
    "llama-tiny": _preset_row("llama", 32, 2, 2, 88, 287_392),
    "llama-1m": _preset_row("llama", 64, 8, 4, 176, 926_784),
    "llama-5m": _preset_row("llama", 192, 8, 6, 512, 5_115_072),
    "llama-20m": _preset_row("llama", 384, 10, 6, 1024, 20_848_512),
}

# Set from the tokenizer / by mixlab; an override of these would silently break the data.
_RESERVED_FIELDS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (a tied embedding/head matrix counts once)."""
    return sum(p.numel() for p in model.parameters())


def preset_parameters(name: str, vocab_size: int) -> int:
    """Exact parameter count of preset ``name`` at ``vocab_size``, without building it.

    GPT-NeoX block: 4d² (qkv + out) + 2·d·f (MLP) + biases and two LayerNorms (9d + f).
    Llama block: 4d² + 3·d·f (SwiGLU) + two RMSNorm gains (2d). Plus the final norm and the
    embedding (vocab·d, counted twice if untied).
    """
    p = _preset(name)
    d, f, n = p["hidden"], p["intermediate"], p["layers"]
    if p["family"] == "gpt_neox":
        body = n * (4 * d * d + 2 * d * f + 9 * d + f) + 2 * d
    else:
        body = n * (4 * d * d + 3 * d * f + 2 * d) + d
    embed = vocab_size * d * (1 if p["tie_embeddings"] else 2)
    return body + embed


def describe_presets() -> str:
    """The preset table for ``--help``: shape and real parameter counts at two vocab sizes."""
    header = f"{'name':<12} {'family':<9} {'hidden':>6} {'layers':>6} {'heads':>5} {'ffn':>5}"
    header += f" {'params@8192':>11} {'params@16384':>12}"
    lines = [header]
    for name, p in PRESETS.items():
        lines.append(
            f"{name:<12} {p['family']:<9} {p['hidden']:>6} {p['layers']:>6} {p['heads']:>5} "
            f"{p['intermediate']:>5} {preset_parameters(name, 8192) / 1e6:>10.2f}M "
            f"{preset_parameters(name, 16384) / 1e6:>11.2f}M"
        )
    lines.append("(embedding and output head are tied; parameters grow by vocab x hidden)")
    return "\n".join(lines)


def preset_config(
    name: str,
    *,
    vocab_size: int,
    eos_id: int,
    bos_id: int | None = None,
    max_seq_len: int = 2048,
    overrides: Mapping[str, Any] | None = None,
) -> PretrainedConfig:
    """The Hugging Face config of preset ``name`` for this tokenizer (no weights built)."""
    from transformers import GPTNeoXConfig, LlamaConfig

    p = _preset(name)
    _check_tokens(vocab_size=vocab_size, eos_id=eos_id, bos_id=bos_id, max_seq_len=max_seq_len)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=p["hidden"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        intermediate_size=p["intermediate"],
        # Rotary positions have no table, so a longer context costs no parameters.
        max_position_embeddings=max(p["max_position"], max_seq_len),
        tie_word_embeddings=p["tie_embeddings"],
        attention_dropout=0.0,
        initializer_range=0.02,
    )
    config: PretrainedConfig
    if p["family"] == "gpt_neox":
        config = GPTNeoXConfig(**common, hidden_act="gelu", hidden_dropout=0.0)
    else:
        config = LlamaConfig(**common, hidden_act="silu", num_key_value_heads=p["heads"])
    _apply_overrides(config, overrides, field="model.overrides")
    _check_positions(config, max_seq_len, f"model.preset={name}")
    _finish_config(config, vocab_size=vocab_size, eos_id=eos_id, bos_id=bos_id)
    return config


def build_model(
    *,
    preset: str | None = None,
    config_path: str | None = None,
    pretrained_path: str | None = None,
    vocab_size: int,
    eos_id: int,
    bos_id: int | None = None,
    max_seq_len: int = 2048,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> PreTrainedModel:
    """Build the causal LM from exactly one of ``preset`` / ``config_path`` / ``pretrained_path``.

    ``vocab_size``/``eos_id``/``bos_id`` come from the shard store's tokenizer; ``max_seq_len``
    is the training context (a config with a shorter position table is refused); ``seed``
    fixes the random init; ``overrides`` set Hugging Face config fields by name.
    """
    sources = {
        "model.preset": preset,
        "model.config_path": config_path,
        "model.pretrained_path": pretrained_path,
    }
    given = [key for key, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ConfigError(
            f"set exactly one of model.preset, model.config_path, model.pretrained_path "
            f"(got {', '.join(given) or 'none'}); presets: {', '.join(PRESETS)}"
        )
    _check_tokens(vocab_size=vocab_size, eos_id=eos_id, bos_id=bos_id, max_seq_len=max_seq_len)

    from transformers import AutoModelForCausalLM

    if pretrained_path is not None:
        config = _pretrained_config(pretrained_path, vocab_size, max_seq_len, overrides)
        _finish_config(config, vocab_size=vocab_size, eos_id=eos_id, bos_id=bos_id)
        model = _instantiate(
            lambda attn: AutoModelForCausalLM.from_pretrained(
                pretrained_path,
                config=config,
                local_files_only=True,
                dtype=torch.float32,
                attn_implementation=attn,
            ),
            seed=seed,
            source=f"model.pretrained_path={pretrained_path}",
        )
        origin = f"pretrained {pretrained_path}"
    else:
        if preset is not None:
            config = preset_config(
                preset,
                vocab_size=vocab_size,
                eos_id=eos_id,
                bos_id=bos_id,
                max_seq_len=max_seq_len,
                overrides=overrides,
            )
            origin, source = f"preset {preset}", f"model.preset={preset}"
        else:
            assert config_path is not None
            config = _file_config(config_path, max_seq_len, overrides)
            _finish_config(config, vocab_size=vocab_size, eos_id=eos_id, bos_id=bos_id)
            origin, source = f"config {config_path}", f"model.config_path={config_path}"
        model = _instantiate(
            lambda attn: AutoModelForCausalLM.from_config(
                config, attn_implementation=attn, dtype=torch.float32
            ),
            seed=seed,
            source=source,
        )
    logger.info(
        "model: %s (%s, %s attention), %s parameters, vocab %d",
        origin,
        type(model).__name__,
        model.config._attn_implementation,
        f"{count_parameters(model):,}",
        vocab_size,
    )
    return model


def _preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return PRESETS[name]


def _check_tokens(*, vocab_size: int, eos_id: int, bos_id: int | None, max_seq_len: int) -> None:
    if vocab_size < 1:
        raise ConfigError(f"vocab_size must be >= 1, got {vocab_size}")
    for field, value in (("eos_id", eos_id), ("bos_id", bos_id)):
        if value is not None and not 0 <= value < vocab_size:
            raise ConfigError(f"{field}={value} is outside the vocabulary [0, {vocab_size})")
    if max_seq_len < 2:
        raise ConfigError(f"data.seq_len must be >= 2 for a causal LM, got {max_seq_len}")


def _apply_overrides(
    config: PretrainedConfig, overrides: Mapping[str, Any] | None, *, field: str
) -> None:
    for key, value in (overrides or {}).items():
        if key in _RESERVED_FIELDS:
            raise ConfigError(
                f"{field}.{key}: set by the tokenizer of the shard store, not by overrides"
            )
        # HF configs accept any attribute silently; refuse unknown names so typos surface.
        if not hasattr(config, key):
            raise ConfigError(
                f"{field}.{key}: not a field of {type(config).__name__} "
                f"(use Hugging Face names such as hidden_size, num_hidden_layers)"
            )
        setattr(config, key, value)


def _finish_config(
    config: PretrainedConfig, *, vocab_size: int, eos_id: int, bos_id: int | None
) -> None:
    old = getattr(config, "vocab_size", None)
    if old is not None and old != vocab_size:
        logger.info("model vocab_size %s -> %d (follows the tokenizer)", old, vocab_size)
    config.vocab_size = vocab_size
    config.eos_token_id = eos_id
    config.bos_token_id = bos_id
    config.pad_token_id = eos_id
    config.use_cache = False


def _check_positions(config: PretrainedConfig, max_seq_len: int, field: str) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and limit < max_seq_len:
        raise ConfigError(
            f"{field}: max_position_embeddings={limit} is shorter than data.seq_len="
            f"{max_seq_len}; lower data.seq_len or raise max_position_embeddings"
        )


def _file_config(
    path: str, max_seq_len: int, overrides: Mapping[str, Any] | None
) -> PretrainedConfig:
    from transformers import AutoConfig

    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model.config_path: {file} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"model.config_path: {file} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ConfigError(
            f"model.config_path: {file} has no 'model_type' key; expected a Hugging Face "
            f"config.json such as one written by save_pretrained"
        )
    model_type = data.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type, **data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"model.config_path: {file}: cannot build a config ({exc})") from None
    _apply_overrides(config, overrides, field="model.overrides")
    _check_positions(config, max_seq_len, f"model.config_path={file}")
    return config


def _pretrained_config(
    path: str, vocab_size: int, max_seq_len: int, overrides: Mapping[str, Any] | None
) -> PretrainedConfig:
    from transformers import AutoConfig

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model.pretrained_path: {folder} is not a model folder (no config.json); "
            f"pass a directory written by save_pretrained"
        )
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.pretrained_path: {folder}: {exc}") from None
    if config.vocab_size != vocab_size:
        raise ConfigError(
            f"model.pretrained_path: {folder} has vocab_size={config.vocab_size} but the "
            f"store's tokenizer has {vocab_size}; use the tokenizer the model was trained with "
            f"or start from model.preset / model.config_path"
        )
    _apply_overrides(config, overrides, field="model.overrides")
    _check_positions(config, max_seq_len, f"model.pretrained_path={folder}")
    return config


def _instantiate(
    make: Callable[[str], PreTrainedModel], *, seed: int, source: str
) -> PreTrainedModel:
    """Call ``make(attn_implementation)`` under a private seeded RNG; SDPA first, then eager."""
    error: Exception | None = None
    for attn in ("sdpa", "eager"):
        # fork_rng restores the caller's RNG state afterwards; devices=[] (CPU only) avoids
        # touching (and warning about) accelerator generators.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = make(attn)
            except ValueError as exc:  # raised when an architecture lacks SDPA support
                error = exc
                continue
            except (OSError, RuntimeError) as exc:
                raise ConfigError(f"{source}: cannot build the model ({exc})") from None
        return model
    raise ConfigError(f"{source}: cannot build the model ({error})")
