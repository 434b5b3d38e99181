"""Atomic checkpoints that let a killed run continue exactly where it stopped.

A checkpoint is one ``torch.save`` file (``<run>/checkpoint.pt``) holding everything that
affects what happens next: model, optimizer, LR scheduler, sampler, mixing-policy and RNG
states, the step counter, the resolved config and the shard store's fingerprint. It is written
with :func:`mixlab.files.save_torch` (temporary ``.checkpoint.pt.tmp-<pid>`` in the same folder,
fsync, rename), so a crash mid-write leaves the previous checkpoint intact. Saving and loading
first remove the temporaries that killed writers left in the run folder
(:func:`mixlab.files.remove_stale_temporaries`).

Format (``format_version`` 1)::

    {"format_version": 1, "mixlab_version": str, "step": int, "finished": bool,
     "config": dict, "store_fingerprint": str, "domains": [str],
     "model": state_dict, "optimizer": ..., "scheduler": ..., "sampler": ..., "policy": ...,
     "rng": {"torch": ByteTensor, "numpy": dict, "python": tuple}, "elapsed_seconds": float}
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixlab.errors import ResumeError
from mixlab.files import remove_stale_temporaries, save_torch
from mixlab.train.run_folder import RunFolder

FORMAT_VERSION = 1


def capture_rng() -> dict[str, Any]:
    """The global RNG states that training code may touch (torch, numpy, python)."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temp file + fsync + rename) and return the path."""
    path = Path(path)
    remove_stale_temporaries(path.parent)
    return save_torch(path, {"format_version": FORMAT_VERSION, **state})


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder or a checkpoint file; return the checkpoint file."""
    p = Path(path)
    if p.is_dir():
        p = RunFolder(p).checkpoint
    if not p.is_file():
        raise ResumeError(
            f"no checkpoint at {p}; a run folder holds {RunFolder.CHECKPOINT} once its first "
            "checkpoint was written (train.checkpoint_every)"
        )
    return p


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file or ``<run>/checkpoint.pt``; ResumeError when unusable.

    Temporaries left in its folder by killed writers are removed first.
    """
    p = resolve_checkpoint(path)
    remove_stale_temporaries(p.parent)
    try:
        # Our own files hold numpy RNG state and plain dicts, so full unpickling is needed.
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt or truncated file
        raise ResumeError(f"{p}: cannot read checkpoint ({exc}); delete it to start over") from exc
    version = state.get("format_version") if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise ResumeError(
            f"{p}: checkpoint format {version} is not supported by this mixlab "
            f"(expects {FORMAT_VERSION})"
        )
    return state
