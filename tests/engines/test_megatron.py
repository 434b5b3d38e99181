"""Megatron-Core: files parsed by megatron-core's own ``get_blend_from_list`` and blended by its
own ``BlendedMegatronDatasetBuilder`` over tiny IndexedDatasets (the achieved sample shares).

megatron-core is in the ``dev`` extra (it installs without touching torch); the few lines that
read the files live in ``megatron/training`` (not in the wheel) and are mirrored in
``tests/engines/mirrors.py``.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mixlab.engines import export_mix
from mixlab.errors import ConfigError
from tests.engines import mirrors
from tests.engines.conftest import DOMAINS

megatron_utils = pytest.importorskip("megatron.core.datasets.utils")


def _blend(tokens: list[str]):
    return megatron_utils.get_blend_from_list(tokens)


def _expected_prefix_weights(weights: dict[str, float]) -> dict[str, float]:
    """The split the prefixes fixture implies: equal for noise, 3:1 by tokens for numbers."""
    return {
        "/data/code_text_document": weights["code"],
        "/data/noise_a_text_document": weights["noise"] / 2,
        "/data/noise_b_text_document": weights["noise"] / 2,
        "/data/numbers_0_text_document": weights["numbers"] * 0.75,
        "/data/numbers_1_text_document": weights["numbers"] * 0.25,
        "/data/prose_text_document": weights["prose"],
    }


def test_data_args_file_is_read_by_megatron(tmp_path, weights_file, prefixes):
    export_mix(weights_file, ["megatron"], tmp_path / "out", prefixes=prefixes)
    folder = tmp_path / "out" / "megatron"
    paths, weights = _blend(mirrors.megatron_data_args(folder / "data_args.txt"))
    expected = _expected_prefix_weights({"code": 0.3, "noise": 0.1, "numbers": 0.2, "prose": 0.4})
    assert dict(zip(paths, weights, strict=True)) == pytest.approx(expected, abs=1e-15)
    assert megatron_utils.normalize(weights) == pytest.approx(weights)  # already sums to 1

    split = mirrors.megatron_per_split(folder / "per_split_data_args.json")
    train = _blend(split["train"])
    assert train == (paths, weights)
    assert split["valid"] is None and split["test"] is None  # only 'numbers' has a valid prefix
    assert "per_split_data_args.json" in (folder / "README.txt").read_text()


def test_valid_and_test_blends_when_every_domain_has_them(tmp_path, weights_file):
    pre = tmp_path / "p.json"
    pre.write_text(
        json.dumps(
            {d: {"paths": [f"/d/{d}"], "valid": [f"/v/{d}"], "test": [f"/t/{d}"]} for d in DOMAINS}
        )
    )
    export_mix(weights_file, ["megatron"], tmp_path / "out", prefixes=pre)
    split = mirrors.megatron_per_split(tmp_path / "out/megatron/per_split_data_args.json")
    paths, weights = _blend(split["valid"])
    assert paths == [f"/v/{d}" for d in DOMAINS]
    assert weights == pytest.approx([0.3, 0.1, 0.2, 0.4])


def _write_indexed(prefix, n_docs=40, seed=0):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for _ in range(n_docs):
        builder.add_document(rng.integers(1, 90, size=48).astype(np.int64), [48])
    builder.finalize(f"{prefix}.idx")


def _megatron_sample_counts(per_split_file, n_samples: int) -> dict[str, int]:
    """Build Megatron's blended GPT dataset from the file; samples drawn per prefix."""
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    class _Tokenizer:  # what GPTDataset asks of a tokenizer
        eod = 0
        pad = 0
        vocab_size = 100
        unique_identifiers = {"class": "mixlab-test"}  # noqa: RUF012

    split = mirrors.megatron_per_split(per_split_file)
    blend = _blend(split["train"])
    cfg = GPTDatasetConfig(
        random_seed=1,
        sequence_length=16,
        blend_per_split=[blend, None, None],
        tokenizer=_Tokenizer(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = BlendedMegatronDatasetBuilder(
            GPTDataset, [n_samples, None, None], lambda: True, cfg
        ).build()[0]
    # The blend is built marginally longer than asked; training reads the first n samples.
    assert len(train) >= n_samples and train[0]["tokens"].shape[0] == 16
    ids = np.asarray([int(train.dataset_index[i]) for i in range(n_samples)])
    return dict(zip(blend[0], np.bincount(ids, minlength=len(blend[0])).tolist(), strict=True))


def test_megatron_blends_each_phase_at_the_exported_shares(tmp_path, adaptive_run):
    names = {d: str(tmp_path / "data" / d) for d in DOMAINS}
    (tmp_path / "data").mkdir()
    for i, prefix in enumerate(names.values()):
        _write_indexed(prefix, seed=i)
    pre = tmp_path / "prefixes.json"
    pre.write_text(json.dumps(names))
    batch, seq = 4, 16
    res = export_mix(
        adaptive_run,
        ["megatron"],
        tmp_path / "out",
        prefixes=pre,
        phases=3,
        budget_tokens=600 * batch * seq,
        global_batch_size=batch,
        seq_len=seq,
    )
    plan = res.plan
    assert len(plan.stages) == 3
    total = np.zeros(len(DOMAINS))
    for stage in plan.stages:
        n = (stage.end_step - stage.start_step) * batch  # samples this phase trains on
        counts = _megatron_sample_counts(
            tmp_path / f"out/megatron/phase_{stage.index}/per_split_data_args.json", n
        )
        got = np.array([counts[names[d]] for d in DOMAINS])
        # Megatron's blending is deterministic: each count within one sample of w * n.
        assert np.abs(got - stage.weights * n).max() <= 1.0
        total += got
    # The whole simulated run: achieved shares = the plan's (and the trajectory's) shares.
    np.testing.assert_allclose(total / total.sum(), plan.shares, atol=3 / total.sum())
    np.testing.assert_allclose(plan.shares, plan.trajectory_shares, atol=2e-3)


def test_prefixes_megatron_would_misread_are_errors(tmp_path, weights_file):
    for bad, match in (("/data/my code", "whitespace"), ("1.5", "reads as a number")):
        pre = tmp_path / "p.yaml"
        pre.write_text("".join(f"{d}: {bad if d == 'code' else '/d/' + d}\n" for d in DOMAINS))
        pre.write_text(pre.read_text().replace(f"code: {bad}", f"code: '{bad}'"))
        with pytest.raises(ConfigError, match=match):
            export_mix(weights_file, ["megatron"], tmp_path / "o", prefixes=pre, force=True)
    pre.write_text("".join(f"{d}: /d/{d}.bin\n" for d in DOMAINS))
    res = export_mix(weights_file, ["megatron"], tmp_path / "o2", prefixes=pre)
    assert any("without" in w and ".bin" in w for w in res.warnings)


def test_zero_weights_are_left_out(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"a": 0.0, "b": 1.0}))
    export_mix(path, ["megatron"], tmp_path / "out")
    assert (tmp_path / "out/megatron/data_args.txt").read_text() == "1.0 b\n"
