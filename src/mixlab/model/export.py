"""Export a trained run as a standard Hugging Face model folder (``mixlab export``).

The folder holds what ``transformers`` expects, so anything built on it (lm-evaluation-harness,
``pipeline``, vLLM, ...) can load the model without mixlab::

    config.json, generation_config.json   the model's HF config (use_cache on for generation)
    model.safetensors                     the trained weights
    tokenizer.json, tokenizer_config.json the store's tokenizer as a PreTrainedTokenizerFast
    mixlab_export.json                    provenance: run, step, store fingerprint, domains,
                                          the final mixture, training seq_len

Load it with ``AutoModelForCausalLM.from_pretrained(out)`` and
``AutoTokenizer.from_pretrained(out)``. The tokenizer is the exact ``tokenizer.json`` the
shards were made with, wrapped with its special tokens named: ``eos_token`` (end of document),
``pad_token`` = EOS (as the model config's ``pad_token_id``), and ``bos_token`` only when the
store has one (byte-level BPEs trained by mixlab have none; like GPT-2, EOS separates
documents). ``model_max_length`` is the training ``seq_len``: the model never saw longer
contexts.

The folder is written next to ``out`` under a temporary name and renamed at the end, so an
interrupted export leaves no half-written model behind.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mixlab import __version__
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, DataError
from mixlab.files import atomic_folder, remove_stale_temporaries, write_json

logger = logging.getLogger(__name__)

EXPORT_INFO = "mixlab_export.json"


def hf_tokenizer(store: ShardStore, model_max_length: int) -> Any:
    """The store's tokenizer as a ``transformers`` fast tokenizer with bos/eos/pad set."""
    from transformers import PreTrainedTokenizerFast

    tok = store.tokenizer()
    eos = tok.id_to_token(store.eos_id)
    if eos is None:
        raise DataError(f"{store.path}: eos_id {store.eos_id} is not in its tokenizer")
    bos = tok.id_to_token(store.bos_id) if store.bos_id is not None else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=eos,
        pad_token=eos,
        bos_token=bos,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def export_run(run: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write run ``run`` (folder or checkpoint file) as an HF model folder ``out``."""
    from mixlab.eval.runs import load_run

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(
            f"--out {out} already exists and is not empty; choose another folder or pass "
            "--overwrite"
        )
    saved = load_run(run)
    model, cfg, state = saved.model, saved.cfg, saved.state
    if not state.get("finished"):
        logger.warning("run %s is unfinished (step %d); exporting it as is", run, state["step"])
    model.config.use_cache = True  # mixlab trains without the KV cache; generation wants it
    tokenizer = hf_tokenizer(saved.store, model_max_length=cfg.data.seq_len)
    sampler = state.get("sampler", {})
    info = {
        "mixlab_version": __version__,
        "run": str(saved.checkpoint.parent.resolve()),
        "step": int(state["step"]),
        "finished": bool(state.get("finished")),
        "store": str(saved.store.path.resolve()),
        "store_fingerprint": saved.store.fingerprint,
        "domains": list(saved.store.domains),
        "final_weights": dict(zip(saved.store.domains, sampler.get("weights", []), strict=False)),
        "mixing": cfg.mixing.name,
        "seq_len": cfg.data.seq_len,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out.parent, names=[out.name])
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_class(tmp / "tokenizer_config.json")
        write_json(tmp / EXPORT_INFO, info)
    logger.info("exported %s (step %d) to %s", run, info["step"], out)
    return out


def _portable_tokenizer_class(path: Path) -> None:
    # transformers 5 writes its new class name (TokenizersBackend), which 4.x cannot resolve;
    # PreTrainedTokenizerFast names the same tokenizer in both.
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json(path, config)


def is_exported_model(path: str | Path) -> bool:
    """True for a Hugging Face model folder (has ``config.json``), e.g. one written here."""
    return (Path(path) / "config.json").is_file()
