"""`mixlab export`: a standard HF folder whose model gives the run's logits (Llama and GPTNeoX
presets) and whose tokenizer is the store's, loaded with the Auto classes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixlab.cli import main
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.eval.runs import load_run
from mixlab.model.export import EXPORT_INFO, export_run
from tests.helpers import train_tiny_run


def trained(store, out, preset: str):
    return train_tiny_run(
        store,
        out,
        model={"preset": preset},
        mixing={"name": "uniform"},
        max_steps=3,
        eval_every=0,
        checkpoint_every=0,
    )


@pytest.mark.parametrize("preset", ["llama-tiny", "neox-tiny"])
def test_exported_model_gives_the_runs_logits(tiny_store, tmp_path, preset, capsys):
    run = trained(tiny_store, tmp_path / "run", preset)
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    hf = tmp_path / "hf"
    assert (hf / "model.safetensors").is_file() and (hf / "config.json").is_file()

    store = ShardStore(tiny_store)
    ids = torch.from_numpy(store.tokens("prose", "val")[:64].astype("int64")).view(2, 32)
    original = load_run(run).model
    exported = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True).eval()
    assert type(exported) is type(original)
    with torch.no_grad():
        torch.testing.assert_close(
            exported(input_ids=ids).logits, original(input_ids=ids).logits, rtol=0, atol=0
        )

    tokenizer = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    text = "def f1(x):\n    return x + 3\nthe of and 417"
    assert tokenizer(text)["input_ids"] == store.tokenizer().encode(text).ids
    assert tokenizer.eos_token_id == store.eos_id == exported.config.eos_token_id
    assert tokenizer.pad_token_id == exported.config.pad_token_id
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    info = json.loads((hf / EXPORT_INFO).read_text())
    assert info["step"] == 3 and info["seq_len"] == 32 and info["domains"] == list(store.domains)
    assert info["final_weights"] == pytest.approx(dict.fromkeys(store.domains, 0.25))


def test_export_refuses_to_overwrite_unless_asked(tiny_store, tmp_path):
    run = trained(tiny_store, tmp_path / "run", "llama-tiny")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="--overwrite"):
        export_run(run, out)
    export_run(run, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert not list(tmp_path.glob(".hf.tmp-*"))  # the temporary folder is gone
