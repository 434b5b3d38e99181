"""``mixing.name: headroom``: train at the headroom optimum w* of finished static-mixture runs.

The cheapest mixture with a principle behind it: run a small proxy once at a static mixture
(``uniform`` usually, e.g. llama-tiny at the target's steps and batch), read each domain's
held-out loss drop over the last doubling of its steps, d_i, and train the target at
``w*_i = d_i / sum_j d_j`` — the mixture of the same tokens that is best for geo_ppl if each
domain's loss is log-linear in its own tokens (:mod:`mixlab.report.headroom` explains the model,
the floors and what it leaves out: transfer between domains, repetition, curvature). No actor,
no swarm: one proxy run per seed.

In a suite the proxy is a stage and the main run reads its folder::

    - name: headroom
      stages:
        - name: proxy
          set: {model.preset: llama-tiny, mixing.name: uniform}
      set: {mixing.name: headroom, mixing.headroom.runs: ["{stage:proxy}"]}

The own-token model misses transfer: cutting python_tests costs python_code too, even at its
kept share. ``check_runs`` measures that: a second proxy stage trains at the guarded w*, and
each domain's residual (its measured change there minus the model's) takes that much slack
from the guard, so a domain that lost through its neighbours gets a floor above its share::

    - name: headroom-checked
      stages:
        - {name: proxy, set: {model.preset: llama-tiny, mixing.name: uniform}}
        - name: check
          set: {model.preset: llama-tiny, mixing.name: headroom,
                mixing.headroom.runs: ["{stage:proxy}"], mixing.headroom.guard_worst: true}
      set: {mixing.name: headroom, mixing.headroom.runs: ["{stage:proxy}"],
            mixing.headroom.guard_worst: true, mixing.headroom.check_runs: ["{stage:check}"]}

``mixing.headroom.runs`` takes run folders and/or suite folders (then ``arm`` picks the arm when
there are several); ``keep_hardest: k`` keeps the k domains with the highest proxy loss at least at
their proxy share (what AC-ODM's ``guard_hardest`` does online), ``guard_worst: true`` cuts each
domain only as far as its predicted loss stays below the proxy's worst domain loss (the worst domain
keeps its share) and ``min_weight`` puts a floor under every domain. The weights are computed once,
when the run starts, and a resumed run keeps the ones in its checkpoint.

Measured (README "Headroom"; llama-1m target, 1200 steps x 16 x 128, 5 paired seeds, llama-tiny
proxies): demo corpus −8.2% ± 1.8 geo_ppl vs ``uniform`` (5/5), the hardest domain +17%; junk
store −12.8% ± 10.5 (5/5), its random-bytes domain +32%. It trades the domains that learn
slowly for the fast ones; with ``guard_worst`` the demo corpus kept −8.4% ± 3.1 (5/5) and its
worst domain lost +6.0% ± 3.9 instead of +17%; with ``check_runs`` −5.3% ± 5.1 and +3.6% ± 4.1,
inside the guard's noise (transfer the one correction step does not remove). 8 seeds on another
machine, where the worst domain (c_headers) learns little from the others: the guard −8.8% ± 3.4
(8/8) with the worst domain level (−1.1% ± 4.5), ``check_runs`` −7.6% ± 2.7 and +0.5% ± 6.7.
At the 300-step demo budget the predicted gain is ~1%, below the seed noise. On a corpus no
method was tuned on (``scripts/build_heldout_corpus.py``, 5 seeds at 1200 steps) the proxies
predicted −0.7% to −1.1% and the guard measured −1.8% ± 4.9 with its worst domain level (+0.5%
± 4.7): little to win there, and the log line says so before the run.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from mixlab.errors import ConfigError, MixlabError
from mixlab.mixing.base import MixingOptions, PolicyContext, register_policy
from mixlab.mixing.static import StaticPolicy
from mixlab.schema import Float, Int, Section, Str

logger = logging.getLogger(__name__)


class HeadroomSection(Section):
    where: ClassVar[str] = "mixing.headroom"

    runs: list[Str] = Field(
        default_factory=list,
        description="Finished runs of one static-mixture arm (run folders and/or suite folders, "
        'one or a list; in a suite, ["{stage:proxy}"]): their eval curves give each domain\'s '
        "loss drop over the last doubling of steps.",
    )

    arm: Str | None = Field(
        None,
        description="The arm to read when a suite folder holds several (null: the only one, "
        "else uniform).",
    )
    step: Int | None = Field(
        None, ge=2, description="t, an eval step of the runs (null: the last all of them reached)."
    )
    keep_hardest: Int = Field(
        0,
        ge=0,
        description="Keep the k domains with the highest loss at t at least at their share of "
        "the runs' mixture (the hardest domain's guard).",
    )
    min_weight: Float = Field(
        0.0, ge=0.0, lt=1.0, description="A floor under every domain's weight (0 = none)."
    )
    guard_worst: bool = Field(
        False,
        description="Floors under which no domain's predicted loss rises above the runs' "
        "highest domain loss at t: the mean gains from the slack below the worst domain only.",
    )

    check_runs: list[Str] = Field(
        default_factory=list,
        description="Runs of the same proxy at the guarded w* of `runs` (run or suite folders; "
        'in a suite a second stage, ["{stage:check}"]): each domain\'s loss there, against the '
        "own-token prediction, measures what the model leaves out (transfer between domains), "
        "and the worst-domain guard is corrected by it. Needs guard_worst.",
    )

    @field_validator("runs", "check_runs", mode="before")
    @classmethod
    def _one_folder(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class HeadroomOptions(MixingOptions):
    headroom: HeadroomSection = Field(default_factory=HeadroomSection)

    @model_validator(mode="after")
    def _has_runs(self) -> HeadroomOptions:
        if not self.headroom.runs:
            raise ValueError(
                "mixing.name=headroom needs mixing.headroom.runs: the folders of finished "
                'static-mixture runs, e.g. ["runs/tiny-uniform"] or, in a suite, ["{stage:proxy}"]'
            )
        if self.headroom.check_runs and not self.headroom.guard_worst:
            raise ValueError(
                "mixing.headroom.check_runs corrects the worst-domain guard: set "
                "mixing.headroom.guard_worst: true too"
            )
        return self


@register_policy("headroom", HeadroomOptions)
def build_headroom(ctx: PolicyContext, cfg: HeadroomOptions) -> StaticPolicy:
    """w* ∝ each domain's loss drop per doubling of steps in finished static-mixture runs
    (mixing.headroom.runs, e.g. a small uniform proxy)."""
    from mixlab.report.headroom import arm_runs, headroom  # report reads run folders
    from mixlab.report.records import load_records

    opts = cfg.headroom
    k = len(ctx.domains)
    if opts.min_weight * k > 1.0:
        raise ConfigError(
            f"mixing.headroom.min_weight: {opts.min_weight} x {k} domains > 1; no mixture keeps it"
        )
    try:
        runs = arm_runs(load_records(opts.runs), opts.arm)
    except MixlabError as exc:
        raise type(exc)(f"mixing.headroom.runs {opts.runs}: {exc}") from exc
    try:
        check = arm_runs(load_records(opts.check_runs)) if opts.check_runs else []
    except MixlabError as exc:
        raise type(exc)(f"mixing.headroom.check_runs {opts.check_runs}: {exc}") from exc
    try:
        est = headroom(
            runs,
            opts.step,
            opts.keep_hardest,
            min_weight=opts.min_weight,
            guard_worst=opts.guard_worst,
            check=check,
        )
    except MixlabError as exc:
        fields = f"mixing.headroom.runs {opts.runs}"
        if opts.check_runs:
            fields += f" / check_runs {opts.check_runs}"
        raise type(exc)(f"{fields}: {exc}") from exc
    if sorted(est.domains) != sorted(ctx.domains):
        raise ConfigError(
            f"mixing.headroom.runs {opts.runs}: their domains {sorted(est.domains)} are not this "
            f"store's {sorted(ctx.domains)}; the proxy must train on the same domains"
        )
    order = [est.domains.index(d) for d in ctx.domains]
    weights = est.optimum[order]
    logger.info(
        "headroom: w* from %d run(s) of %s at steps %d-%d (predicted vs their mixture: geo_ppl "
        "%+.2f%%, worst_ppl %+.2f%%): %s",
        len(est.seeds),
        runs[0].method,
        est.step // 2,
        est.step,
        est.gain_pct,
        est.worst_pct(),
        ", ".join(f"{d} {w:.3f}" for d, w in zip(ctx.domains, weights, strict=True)),
    )
    if est.residual is not None:
        logger.info(
            "headroom: the checked runs' residuals (nats beyond the own-token model, + = worse): "
            "%s",
            ", ".join(f"{d} {r:+.3f}" for d, r in zip(est.domains, est.residual, strict=True)),
        )
    return StaticPolicy(ctx.domains, weights, name="headroom")
