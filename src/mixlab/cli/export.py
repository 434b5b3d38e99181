"""``mixlab export``: write a run as a Hugging Face model folder.

The work is :func:`mixlab.model.export.export_run`.
"""

from __future__ import annotations

import argparse

from mixlab.cli.options import add_command

SUMMARY = "write a run as a Hugging Face model folder (from_pretrained loads it)"
DESCRIPTION = """\
Export a trained run (run folder or checkpoint file) as a standard Hugging Face model
folder: config.json, model.safetensors, the store's tokenizer as tokenizer.json +
tokenizer_config.json (a PreTrainedTokenizerFast with eos/pad/bos set), and
mixlab_export.json (run, step, store fingerprint, final mixture).
AutoModelForCausalLM.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR) load it;
the logits equal the run's.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(sub, "export", SUMMARY, DESCRIPTION)
    p.add_argument("run", help="run folder or checkpoint.pt file")
    p.add_argument("--out", "-o", required=True, help="folder to write (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from mixlab.model.export import export_run

    out = export_run(args.run, args.out, overwrite=args.overwrite)
    print(f"exported {args.run} to {out}")
    print(
        "load it with: AutoModelForCausalLM.from_pretrained("
        f"{str(out)!r}), AutoTokenizer.from_pretrained({str(out)!r})"
    )
    return 0
