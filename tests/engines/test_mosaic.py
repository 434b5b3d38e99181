"""mosaic streaming: ``streams.yaml`` read by a mirror of ``Stream`` / ``apply_weights``
(mosaicml-streaming pins numpy<2.2 and transformers<5 and needs torchvision, so it is not
installed here; ``verify_engine_parsers.py`` builds a real StreamingDataset from the file on MDS
shards in a separate venv)."""

from __future__ import annotations

import json

import numpy as np

from mixlab.engines import export_mix
from tests.engines import mirrors
from tests.engines.conftest import DOMAINS


def test_streams_per_phase_and_simulated_epochs(tmp_path, adaptive_run):
    res = export_mix(
        adaptive_run,
        ["mosaic"],
        tmp_path / "out",
        phases=3,
        budget_tokens=2048 * 3000,
        global_batch_size=16,
        seq_len=2048,
    )
    total = np.zeros(len(DOMAINS))
    for stage in res.plan.stages:
        data = mirrors.load_yaml(tmp_path / f"out/mosaic/phase_{stage.index}/streams.yaml")
        streams = mirrors.mosaic_streams(data)
        assert list(data["streams"]) == list(DOMAINS)
        assert data["epoch_size"] == (stage.end_step - stage.start_step) * 16
        choose = mirrors.mosaic_choose(streams, data["epoch_size"])
        np.testing.assert_allclose(choose / choose.sum(), stage.weights, atol=1 / choose.sum())
        total += choose
    np.testing.assert_allclose(total / total.sum(), res.plan.shares, atol=1e-3)


def test_remote_and_local_several_paths_and_document_lengths(tmp_path, weights_file):
    pre = tmp_path / "p.json"
    pre.write_text(
        json.dumps(
            {
                "code": {"paths": ["s3://bucket/code"], "tokens_per_sample": 1000},
                "noise": {"paths": ["/mds/noise_a", "/mds/noise_b"], "tokens_per_sample": 100},
                "numbers": {"paths": ["/mds/numbers"], "tokens_per_sample": 500},
                "prose": {"paths": ["gs://b/prose"], "tokens_per_sample": 2000},
            }
        )
    )
    export_mix(weights_file, ["mosaic"], tmp_path / "out", prefixes=pre)
    data = mirrors.load_yaml(tmp_path / "out/mosaic/streams.yaml")
    assert list(data["streams"]) == ["code", "noise_0", "noise_1", "numbers", "prose"]
    assert data["streams"]["code"]["remote"] == "s3://bucket/code"
    assert data["streams"]["noise_1"]["local"] == "/mds/noise_b"
    assert "epoch_size" not in data  # no budget
    props = np.array([s["proportion"] for s in mirrors.mosaic_streams(data)])
    lens = np.array([1000, 100, 100, 500, 2000])
    token_shares = props * lens / (props * lens).sum()
    np.testing.assert_allclose(token_shares, [0.3, 0.05, 0.05, 0.2, 0.4], atol=1e-12)
