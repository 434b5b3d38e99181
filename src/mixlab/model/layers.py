"""Find a causal LM's transformer blocks and their weight matrices by *role*, not by name.

Mixing methods that look inside the model (AC-ODM's gradient-alignment reward and its
weight-norm state features, METHODS.md §2.1 and §2.3) address "the MLP down-projection of block
b". Hugging Face families spell that differently:

===========  ===============================  ==========================================
family       blocks                           role ``mlp_down`` / ``attn_out`` in a block
===========  ===============================  ==========================================
Llama        ``model.layers``                 ``mlp.down_proj`` / ``self_attn.o_proj``
torchtitan   ``layers`` (a ``ModuleDict``)    ``feed_forward.w2`` / ``attention.wo``
GPT-NeoX     ``gpt_neox.layers``              ``mlp.dense_4h_to_h`` / ``attention.dense``
GPT-2-like   ``transformer.h``                ``mlp.c_proj`` / ``attn.c_proj``
OPT-like     ``model.decoder.layers``         ``fc2`` / ``self_attn.out_proj``
===========  ===============================  ==========================================

:func:`decoder_blocks` finds the block list as the ``ModuleList`` (or ``ModuleDict``, as
torchtitan keeps its blocks for pipeline stages) whose length is the config's
``num_hidden_layers`` (falling back to the longest one), so new families usually work without a
table entry. :func:`role_module` picks the role's ``nn.Linear`` in a block; a
block without one raises :class:`~mixlab.errors.ConfigError` that lists the block's linear
layers, so the table above is easy to extend.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mixlab.errors import ConfigError

ROLES: dict[str, tuple[str, ...]] = {
    "mlp_down": (
        "mlp.down_proj",
        "mlp.dense_4h_to_h",
        "mlp.c_proj",
        "mlp.fc2",
        "fc2",
        "feed_forward.w2",
    ),
    "attn_out": (
        "self_attn.o_proj",
        "attention.wo",
        "attention.dense",
        "attn.c_proj",
        "self_attn.out_proj",
        "attn.out_proj",
    ),
}

_CHECKPOINT_WRAPPED = "_checkpoint_wrapped_module."


def decoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of ``model``, input side first."""
    lists: list[list[torch.nn.Module]] = [
        list(m.values()) if isinstance(m, torch.nn.ModuleDict) else list(m)
        for m in model.modules()
        if isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict)) and len(m) > 0
    ]
    if not lists:
        raise ConfigError(
            f"{type(model).__name__}: no list of transformer blocks (torch.nn.ModuleList or "
            "ModuleDict) found"
        )
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    wanted = n_layers if any(len(m) == n_layers for m in lists) else max(len(m) for m in lists)
    return next(m for m in lists if len(m) == wanted)


def role_module(block: torch.nn.Module, role: str) -> torch.nn.Linear:
    """The ``nn.Linear`` playing ``role`` (a key of :data:`ROLES`) in one block."""
    if role not in ROLES:
        raise ConfigError(f"unknown layer role {role!r}; choose one of {', '.join(ROLES)}")
    # a block wrapped for activation checkpointing (torch's checkpoint_wrapper, as torchtitan
    # applies it) names its layers under this prefix
    modules = {n.replace(_CHECKPOINT_WRAPPED, ""): m for n, m in block.named_modules()}
    for name in ROLES[role]:
        found = modules.get(name)
        if isinstance(found, torch.nn.Linear):
            return found
    linears = [n for n, m in modules.items() if isinstance(m, torch.nn.Linear)]
    raise ConfigError(
        f"{type(block).__name__}: no {role} layer among its linear layers "
        f"({', '.join(linears) or 'none'}); add the name to mixlab.model.layers.ROLES"
    )


def role_modules(model: torch.nn.Module, role: str, blocks: Sequence[int]) -> list[torch.nn.Linear]:
    """``role_module`` of each block index in ``blocks`` (in that order, duplicates kept)."""
    all_blocks = decoder_blocks(model)
    return [role_module(all_blocks[b], role) for b in blocks]
