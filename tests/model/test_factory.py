"""Model factory: preset sizes, vocabulary and token ids, seeding, the three sources, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from mixlab.errors import ConfigError
from mixlab.model.factory import (
    PRESETS,
    build_model,
    count_parameters,
    describe_presets,
    preset_config,
    preset_parameters,
)

VOCAB = 300


def tiny(preset: str = "llama-tiny", **kwargs: object) -> torch.nn.Module:
    args: dict = {"vocab_size": VOCAB, "eos_id": 1, "bos_id": 2, "max_seq_len": 64}
    args.update(kwargs)
    return build_model(preset=preset, **args)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts_match_the_table(name: str) -> None:
    for vocab in (8192, 16384):
        config = preset_config(name, vocab_size=vocab, eos_id=0)
        with torch.device("meta"):  # shapes only: a 20M model costs no memory or init time
            model = AutoModelForCausalLM.from_config(config)
        real = count_parameters(model)
        assert real == preset_parameters(name, vocab)
        if vocab == 8192:
            assert real == pytest.approx(PRESETS[name]["params_at_8k"], rel=0.01)
    # The name promises a size: tiny ~0.3M, 1m ~1M, 5m ~5M, 20m ~20M (at vocab 8192).
    nominal = {"tiny": 0.3e6, "1m": 1e6, "5m": 5e6, "20m": 20e6}[name.split("-")[1]]
    assert PRESETS[name]["params_at_8k"] == pytest.approx(nominal, rel=0.1)


def test_describe_presets_lists_every_preset() -> None:
    table = describe_presets()
    for name in PRESETS:
        assert name in table
    assert "20.89M" in table  # neox-20m at vocab 8192


@pytest.mark.parametrize("preset", ["neox-tiny", "llama-tiny"])
def test_built_model_follows_tokenizer_and_runs(preset: str) -> None:
    model = tiny(preset)
    cfg = model.config
    assert (cfg.vocab_size, cfg.eos_token_id, cfg.bos_token_id, cfg.pad_token_id) == (
        VOCAB,
        1,
        2,
        1,
    )
    assert cfg.use_cache is False
    assert cfg._attn_implementation == "sdpa"
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert count_parameters(model) == preset_parameters(preset, VOCAB)
    logits = model(input_ids=torch.randint(0, VOCAB, (2, 16))).logits
    assert logits.shape == (2, 16, VOCAB)


def test_init_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a, b, c = tiny(seed=3), tiny(seed=3), tiny(seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_exactly_one_source_is_required() -> None:
    with pytest.raises(ConfigError, match=r"model\.preset.*neox-tiny"):
        build_model(vocab_size=VOCAB, eos_id=0)
    with pytest.raises(ConfigError, match=r"model\.preset, model\.config_path"):
        build_model(preset="neox-tiny", config_path="x.json", vocab_size=VOCAB, eos_id=0)


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"model\.preset: unknown preset 'gpt5'.*llama-20m"):
        tiny("gpt5")


def test_token_ids_are_checked_against_the_vocabulary() -> None:
    with pytest.raises(ConfigError, match="eos_id=300"):
        tiny(eos_id=VOCAB)
    with pytest.raises(ConfigError, match="bos_id=-1"):
        tiny(bos_id=-1)


def test_overrides_change_the_config_and_reject_typos() -> None:
    model = tiny("neox-tiny", overrides={"num_hidden_layers": 1, "tie_word_embeddings": False})
    assert model.config.num_hidden_layers == 1
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    with pytest.raises(ConfigError, match=r"model\.overrides\.hiden_size"):
        tiny(overrides={"hiden_size": 64})
    with pytest.raises(ConfigError, match=r"model\.overrides\.vocab_size.*tokenizer"):
        tiny(overrides={"vocab_size": 1000})


def test_config_path_file_or_folder(tmp_path: Path) -> None:
    data = {
        "model_type": "gpt_neox",
        "vocab_size": 50_000,  # replaced by the tokenizer's vocabulary
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    for source in (str(path), str(tmp_path)):
        model = build_model(config_path=source, vocab_size=VOCAB, eos_id=0, max_seq_len=128)
        assert type(model).__name__ == "GPTNeoXForCausalLM"
        assert model.config.vocab_size == VOCAB
        assert model.config.num_hidden_layers == 1
    with pytest.raises(ConfigError, match=r"max_position_embeddings=128.*seq_len=256"):
        build_model(config_path=str(path), vocab_size=VOCAB, eos_id=0, max_seq_len=256)


def test_config_path_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_model(config_path=str(tmp_path / "nope.json"), vocab_size=VOCAB, eos_id=0)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        build_model(config_path=str(bad), vocab_size=VOCAB, eos_id=0)
    typeless = tmp_path / "typeless.json"
    typeless.write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(ConfigError, match="no 'model_type'"):
        build_model(config_path=str(typeless), vocab_size=VOCAB, eos_id=0)


def test_pretrained_folder_round_trip_and_vocab_check(tmp_path: Path) -> None:
    original = tiny("neox-tiny", seed=7)
    original.save_pretrained(tmp_path / "m")
    loaded = build_model(
        pretrained_path=str(tmp_path / "m"), vocab_size=VOCAB, eos_id=1, bos_id=2, seed=99
    )
    assert same_weights(original, loaded)
    with pytest.raises(ConfigError, match="vocab_size=300 but the store's tokenizer has 512"):
        build_model(pretrained_path=str(tmp_path / "m"), vocab_size=512, eos_id=1)
    with pytest.raises(ConfigError, match="not a model folder"):
        build_model(pretrained_path=str(tmp_path), vocab_size=VOCAB, eos_id=1)


def test_falls_back_to_eager_attention_with_the_same_init(monkeypatch: pytest.MonkeyPatch) -> None:
    original = AutoModelForCausalLM.from_config
    calls: list[str] = []

    def no_sdpa(config: object, attn_implementation: str, **kwargs: object) -> torch.nn.Module:
        calls.append(attn_implementation)
        if attn_implementation == "sdpa":
            raise ValueError("this architecture does not support sdpa")
        return original(config, attn_implementation=attn_implementation, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", no_sdpa)
    model = tiny(seed=5)
    monkeypatch.undo()
    assert calls == ["sdpa", "eager"]
    assert model.config._attn_implementation == "eager"
    assert same_weights(model, tiny(seed=5))  # the retry is re-seeded
