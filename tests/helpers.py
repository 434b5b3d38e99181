"""Test helpers shared across test modules (fixtures live in the conftest.py files)."""

from __future__ import annotations

from typing import Any

from mixlab.train.callbacks import Callback


class KillAt(Callback):
    """Interrupts training like Ctrl-C once the train record of ``step`` is logged."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        if record.get("step") == self.step and "train/loss" in record:
            raise KeyboardInterrupt


def build(name: str, ctx: Any, **options: Any) -> Any:
    """``build_policy`` from a ``mixing:`` mapping (``name`` plus that policy's options)."""
    from mixlab.mixing.base import build_policy, parse_mixing

    return build_policy(ctx, parse_mixing({"name": name, **options}))
