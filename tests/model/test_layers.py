"""Blocks and matrices by role: the same answer for Llama and GPT-NeoX, clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from mixlab.errors import ConfigError
from mixlab.model.factory import build_model
from mixlab.model.layers import decoder_blocks, role_module, role_modules


def tiny(preset: str) -> torch.nn.Module:
    return build_model(preset=preset, vocab_size=300, eos_id=1, max_seq_len=32)


@pytest.mark.parametrize(
    ("preset", "down", "attn_out"),
    [
        ("llama-tiny", "model.layers.{b}.mlp.down_proj", "model.layers.{b}.self_attn.o_proj"),
        (
            "neox-tiny",
            "gpt_neox.layers.{b}.mlp.dense_4h_to_h",
            "gpt_neox.layers.{b}.attention.dense",
        ),
    ],
)
def test_roles_name_the_hf_modules(preset: str, down: str, attn_out: str) -> None:
    model = tiny(preset)
    names = {m: n for n, m in model.named_modules()}
    blocks = decoder_blocks(model)
    assert len(blocks) == model.config.num_hidden_layers
    for role, pattern in (("mlp_down", down), ("attn_out", attn_out)):
        found = role_modules(model, role, [1, 0])
        assert [names[m] for m in found] == [pattern.format(b=1), pattern.format(b=0)]
    # The down-projection maps the MLP width back to the hidden size.
    down_proj = role_module(blocks[0], "mlp_down")
    assert down_proj.out_features == model.config.hidden_size


def test_unknown_role_or_block_without_it_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown layer role"):
        role_module(torch.nn.Linear(2, 2), "mlp_up")
    block = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match=r"no mlp_down layer .*\(0\)"):
        role_module(block, "mlp_down")
    with pytest.raises(ConfigError, match="ModuleList"):
        decoder_blocks(torch.nn.Linear(2, 2))


def test_blocks_in_a_module_dict_and_behind_a_checkpoint_wrapper_are_found() -> None:
    """torchtitan keeps its blocks in a ModuleDict and wraps them for activation checkpointing."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    def block() -> torch.nn.Module:
        b = torch.nn.Module()
        b.feed_forward = torch.nn.Module()
        b.feed_forward.w2 = torch.nn.Linear(8, 4)
        b.attention = torch.nn.Module()
        b.attention.wo = torch.nn.Linear(4, 4)
        return b

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleDict({str(i): checkpoint_wrapper(block()) for i in range(3)})
    blocks = decoder_blocks(model)
    assert blocks == list(model.layers.values())
    down = role_modules(model, "mlp_down", [2])[0]
    assert down is model.layers["2"]._checkpoint_wrapped_module.feed_forward.w2
    assert role_module(blocks[0], "attn_out").out_features == 4
