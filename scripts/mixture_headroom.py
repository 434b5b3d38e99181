#!/usr/bin/env python
"""How much can any mixture gain at this budget? The table behind the report's headroom note.

For a static-mixture arm of a suite (``uniform`` by default), each domain's held-out loss drop
over the last doubling of the run's steps, the mixture w* ∝ that drop (the optimum if each
domain's loss is log-linear in its own tokens; :mod:`mixlab.report.headroom` explains the
model and what it leaves out), each domain's predicted change and the predicted geo_ppl gain.
``--keep-hardest K`` keeps the K domains with the highest loss at their share (AC-ODM's
``guard_hardest``), ``--guard-worst`` cuts a domain only as far as its predicted loss stays below
the arm's worst domain loss (``--check-arm C``: corrected by arm C's residuals, C trained at
that w*); ``--explain ARM`` checks the model against an arm trained at other static mixtures
(the headroom arm: each seed at its w*): each domain's measured change against the same-seed
``--arm`` run next to the change the model predicts, and how many times larger the measured
changes are; ``--vs A B`` takes the paired seed noise of arms A and B and says how
many seeds a 95% interval as narrow as the gain needs; ``--out`` writes w* as a weights file for
``mixing.name: fixed`` (``mixing.weights_file``) to check the prediction with a real run::

    python scripts/mixture_headroom.py runs/acodm --vs acodm-prior uniform --out w.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mixlab.errors import DataError, MixlabError
from mixlab.report.headroom import (
    Headroom,
    arm_runs,
    headroom,
    model_check,
    paired_spread,
    seeds_needed,
)
from mixlab.report.records import RunRecord, load_records


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("suite", type=Path, help="the suite's output folder (mixlab compare --out)")
    ap.add_argument(
        "--arm", help="a static-mixture arm (default: the only arm of a run folder, else uniform)"
    )
    ap.add_argument("--step", type=int, help="t, an eval step (default: the runs' last)")
    ap.add_argument(
        "--vs",
        nargs=2,
        metavar=("ARM_A", "ARM_B"),
        help="two arms whose paired geo_ppl differences give the seed noise (e.g. uniform "
        "acodm-prior); default: none",
    )
    ap.add_argument(
        "--keep-hardest",
        type=int,
        default=0,
        metavar="K",
        help="keep the K domains with the highest loss at t at least at the arm's share "
        "(AC-ODM's guard_hardest; default 0)",
    )
    ap.add_argument(
        "--guard-worst",
        action="store_true",
        help="cut each domain only as far as its predicted loss stays at or below the arm's "
        "highest domain loss at t (the worst domain keeps its share)",
    )
    ap.add_argument(
        "--check-arm",
        metavar="ARM",
        help="an arm of the same suite trained at the guarded w* (with --guard-worst): its "
        "per-domain residuals against the model correct the guard",
    )
    ap.add_argument(
        "--explain",
        metavar="ARM",
        help="an arm of the same suite at other static mixtures (e.g. the headroom arm): its "
        "per-domain changes against the same-seed --arm run, measured and predicted",
    )
    ap.add_argument("--out", type=Path, help="write w* as a weights file (mixing.weights_file)")
    args = ap.parse_args()
    try:
        report(args)
    except MixlabError as exc:
        raise SystemExit(f"mixture_headroom: {exc}") from None


def report(args: argparse.Namespace) -> None:
    records = load_records([args.suite])
    try:
        args.arm = arm_runs(records, args.arm)[0].method  # None: the only arm, else uniform
        names = [args.arm, *(args.vs or ())]
        names += [name for name in (args.check_arm, args.explain) if name]
        by_arm = {name: arm_runs(records, name) for name in names}
    except DataError as exc:
        raise SystemExit(f"{args.suite}: {exc}") from None
    h = headroom(
        by_arm[args.arm],
        args.step,
        args.keep_hardest,
        guard_worst=args.guard_worst,
        check=by_arm[args.check_arm] if args.check_arm else (),
    )
    kept = [d for d, w, f in zip(h.domains, h.optimum, h.floors, strict=True) if f > 0 and w == f]
    print(
        f"{args.arm}, seeds {list(h.seeds)}: drop over steps {h.step // 2}-{h.step}"
        + (f"; at their floor: {kept}" if args.keep_hardest or args.guard_worst else "")
    )
    print(f"{'domain':20s} {'p':>6s} {'drop (nats)':>14s} {'w*':>6s} {'predicted':>10s}")
    change = h.domain_change()
    for i, d in enumerate(h.domains):
        drop = f"{h.drop[i]:.3f} ± {h.drop_std[i]:.3f}"
        pct = f"{100 * math.expm1(change[i]):+.1f}%" if math.isfinite(change[i]) else "starved"
        print(f"{d[:20]:20s} {h.prior[i]:6.3f} {drop:>14s} {h.optimum[i]:6.3f} {pct:>10s}")
    print(
        f"predicted geo_ppl at w* vs {args.arm}: {h.gain_pct:+.2f}% "
        f"({h.predicted_gain():.4f} nats of mean log-loss); worst_ppl {h.worst_pct():+.2f}%"
    )
    if args.vs:
        a, b = args.vs
        std, n = paired_spread(by_arm[a], {r.seed: r for r in by_arm[b] if r.ok})
        if std is None:
            raise SystemExit(f"--vs {a} {b}: fewer than 2 seeds with a final eval in both")
        need = seeds_needed(h.gain_pct, std)
        print(
            f"paired noise {a} vs {b}: per-seed geo_ppl differences spread by {std:.2f}% over "
            f"{n} seeds; a 95% interval narrower than the predicted gain needs "
            f"{need if need is not None else 'more than 10000'} paired seeds"
        )
    if args.explain:
        explain(h, by_arm[args.arm], by_arm[args.explain], args.arm, args.explain)
    if args.out:
        weights = {d: round(float(w), 6) for d, w in zip(h.domains, h.optimum, strict=True)}
        weights[h.domains[-1]] = round(1.0 - sum(list(weights.values())[:-1]), 6)
        args.out.write_text(json.dumps({"weights": weights}, indent=1) + "\n")
        print(f"w* written to {args.out} (mixing.name: fixed, mixing.weights_file: {args.out})")


def explain(
    h: Headroom, baseline: list[RunRecord], arm: list[RunRecord], base_name: str, arm_name: str
) -> None:
    """Print how well the model of ``baseline`` predicted ``arm``'s per-domain changes."""
    mc = model_check(h, baseline, arm)
    print(
        f"\n{arm_name} vs {base_name}, seeds {list(mc.seeds)}: each domain's loss change at step "
        f"{mc.step} (nats, mean over seeds), predicted by {base_name}'s drops and measured"
    )
    print(f"{'domain':20s} {'w':>6s} {'predicted':>10s} {'measured':>16s}")
    for i, d in enumerate(mc.domains):
        spread = mc.measured[:, i].std(ddof=1) if len(mc.seeds) > 1 else 0.0
        measured = f"{mc.measured[:, i].mean():+.3f} ± {spread:.3f}"
        print(
            f"{d[:20]:20s} {mc.mixtures[:, i].mean():6.3f} "
            f"{mc.predicted[:, i].mean():+10.3f} {measured:>16s}"
        )
    print(
        f"mean log-loss: predicted {mc.predicted.mean():+.4f}, measured {mc.measured.mean():+.4f} "
        f"nats; the measured changes are {mc.scale:.2f}x the predicted ones (least squares), "
        f"rms error {mc.rmse():.3f} nats ({mc.rmse(mc.scale):.3f} after that scale)"
    )


if __name__ == "__main__":
    main()
