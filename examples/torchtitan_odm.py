"""torchtitan with online ODM mixing: a config module for ``torchtitan.train --module``.

    PYTHONPATH=examples torchrun --nproc_per_node=8 -m torchtitan.train \\
        --module torchtitan_odm --config odm_llama3_8b \\
        --mixing.store shards/ --dump_folder outputs/odm --checkpoint.enable

torchtitan imports the module named by ``--module`` and calls the ``--config`` function, which
returns a Trainer config. Here it is torchtitan's own Llama 3 8B recipe turned into a
``MixingTrainer`` config by :func:`mixlab.integrations.torchtitan.mixing_config`. ODM
(arXiv 2312.02406) then picks one domain per micro-batch (``homogeneous`` sampling). After each
step it updates its weights from the per-domain losses, all-reduced over the data-parallel ranks.
Every ``--mixing.*`` field can still be set on the command line. The model's vocabulary must
cover the store's tokenizer. Needs torchtitan 0.3.0 installed beside mixlab (README "Online
mixing inside torchtitan"); ``odm_llama3_debug`` is the same with torchtitan's tiny debug model.
"""

from __future__ import annotations

from typing import Any

from mixlab.integrations.torchtitan import MixingTrainer, mixing_config

ODM = {"odm": {"warmup_steps": 100}, "update_every": 1}


def _odm(base: Any) -> MixingTrainer.Config:
    return mixing_config(base, policy="odm", sampling="homogeneous", options=ODM)


def odm_llama3_8b() -> MixingTrainer.Config:
    from torchtitan.models.llama3.config_registry import llama3_8b

    return _odm(llama3_8b())


def odm_llama3_debug() -> MixingTrainer.Config:
    from torchtitan.models.llama3.config_registry import llama3_debugmodel

    return _odm(llama3_debugmodel())
