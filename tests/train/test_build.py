"""Run parts from the config: the precision rule of ``train.precision=auto``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mixlab.train import build
from mixlab.train.build import CPU_BF16_MIN_HIDDEN, resolve_precision


def model(hidden: int) -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(hidden_size=hidden))


def test_explicit_precisions() -> None:
    assert resolve_precision("fp32", model(1024)) is None
    assert resolve_precision("bf16", model(8)) is torch.bfloat16


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_needs_native_bf16_and_a_wide_model(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(build.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(build.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    wide, narrow = model(CPU_BF16_MIN_HIDDEN), model(CPU_BF16_MIN_HIDDEN - 1)
    assert resolve_precision("auto", wide) is (torch.bfloat16 if native else None)
    assert resolve_precision("auto", narrow) is None
    assert resolve_precision("auto", None) is (torch.bfloat16 if native else None)
