"""How much can any mixture gain at this budget? A first-order estimate from a static-mixture arm.

The question before any mixing method: at this model size and token budget, is there anything
to win by reallocating tokens between domains, and could a comparison with this many seeds see
it? Both answers come from runs a suite already has.

The estimate
    Take the runs of a static-mixture arm (``uniform`` usually; mixture p fixed during the run)
    and each domain's held-out loss drop over the last doubling of the run's steps,
    ``d_i = L_i(t / 2) - L_i(t)`` (eval rows, interpolated in log2 step; mean over seeds). Under
    a static mixture a domain's tokens grow like the steps, so d_i is its loss drop per doubling
    of its own tokens. If near the end of the budget each domain's loss is log-linear in its own
    tokens, ``L_i(n) = c_i - d_i log2 n`` (the local form of a power law), the mixture that
    minimises the mean log-loss over the K domains (log geo_ppl) at the same total tokens solves

        maximise  sum_i d_i log w_i  subject to  sum_i w_i = 1   ->   w*_i = d_i / sum_j d_j

    (with lower bounds ``w_i >= f_i``, e.g. the worst domain kept at its share as AC-ODM's
    ``guard_hardest`` does: ``w_i = max(f_i, d_i / lambda)``, :func:`optimum`). Its predicted
    gain over p is ``(1/K) sum_i d_i log2(w*_i / p_i)`` nats of mean log-loss (geo_ppl is
    multiplied by exp(-gain)); each domain's own change is ``-d_i log2(w*_i / p_i)`` nats.
    AC-ODM's ``reward: progress`` climbs toward the same optimum online: its reward d_i / w_i is
    equal across domains exactly at w*.

The worst-domain guard
    w* buys its mean gain from the domains that learn slowly, and those are often the ones with
    the highest loss: the worst domain gets worse. ``guard_worst`` asks instead that no domain's
    predicted loss rise above the highest loss under p, ``L_max = max_j L_j(t)``:
    ``L_i - d_i log2(w_i / p_i) <= L_max``, i.e. the floor
    ``f_i = p_i 2^(-(L_max - L_i) / d_i)``. The hardest domain keeps its share (no slack), a
    domain far below it may be cut a lot, and since every f_i <= p_i the floors always fit. It
    spends the slack between each domain's loss and the worst one, so under the model worst_ppl
    does not rise while the mean still gains. Measured, it does rise (transfer, below):
    ``check`` runs of the proxy at the guarded w* give each domain's residual r_i (its
    measured change minus the model's, :func:`transfer_residual`), and the guard then asks
    ``L_i + r_i - d_i log2(w_i / p_i) <= L_max``: a domain that lost through its neighbours
    gets a floor above p_i (floors that then sum past 1 are scaled down to sum to 1).

What it leaves out
    Transfer between domains (when all domains double together, a domain's drop includes what
    the others taught it, so cutting it costs more than d_i says if its neighbours are cut too),
    repetition (a small domain pushed to many epochs learns less per token), the learning-rate
    schedule (the last doubling includes the decay) and curvature: the per-domain figures
    overstate large moves. Read the gain as an order of magnitude; README "AC-ODM" measures it
    against real runs of w*.

Checking the model
    :func:`model_check` puts a static arm trained at other mixtures (the headroom arm, at each
    seed's w*) next to the same-seed baseline run: each domain's measured change against
    ``-d_i log2(w_i / p_i)`` with the baseline's own d, and the least-squares scale of the
    measured changes on the predicted ones (1 = the model's size is right); the report's note
    gives each static arm's predicted and measured geo_ppl change. Measured on the demo corpus
    (README "Headroom", 8 seeds): the llama-tiny proxy's d predict the llama-1m target's
    per-domain changes at the proxy's guarded w* within 0.04 nats rms on 7 of the 8 domains;
    the eighth, licenses (small, repeated, boilerplate text), gains 1.10 nats where its d says
    0.49, and that one domain is the whole gap between the predicted and the measured geo_ppl
    gain (-2.3% and -8.9%).

Seeds
    :func:`seeds_needed` turns the paired seed noise of a comparison (the spread of per-seed
    differences) into the number of seeds whose 95% t interval is narrower than the predicted
    gain; :func:`headroom_note` puts both in the report's notes. ``scripts/mixture_headroom.py``
    prints the table and writes w* as a weights file for ``mixing.name: fixed``;
    ``mixing.name: headroom`` (:mod:`mixlab.mixing.headroom`) trains at w* read straight from
    a proxy's run folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import DataError
from mixlab.mixing.own_tokens import optimum, worst_floors
from mixlab.report.records import RunRecord
from mixlab.report.stats import spread, t_quantile_975

__all__ = [
    "Headroom",
    "ModelCheck",
    "arm_runs",
    "finished_runs",
    "headroom",
    "headroom_note",
    "model_check",
    "optimum",
    "paired_spread",
    "seeds_needed",
    "static_mixture",
    "transfer_residual",
    "worst_floors",
]

WEIGHT = "mix/weight/"
GEO = "eval/geo_ppl"


@dataclass(frozen=True)
class Headroom:
    """The estimate for one arm: per-domain drops, the optimum and its predicted gain."""

    step: int  # t: the eval step the drops end at
    domains: tuple[str, ...]
    prior: np.ndarray  # p: the arm's (static) mixture
    drop: np.ndarray  # d_i, nats per doubling, mean over seeds
    drop_std: np.ndarray  # its spread over seeds (0 for one seed)
    optimum: np.ndarray  # w*: :func:`optimum` of the drops above any floors
    floors: np.ndarray  # the lower bounds w* respects (0: none)
    seeds: tuple[int, ...]
    loss: np.ndarray  # L_i(t), nats, mean over seeds
    residual: np.ndarray | None = None  # r_i from checked runs (transfer_residual), if any

    def domain_change(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Predicted change of each domain's loss at ``weights`` (default w*), in nats
        (negative = better; inf for a domain given no weight). With checked runs their
        residuals are added: what the model missed there, taken to hold near that mixture."""
        w = self.optimum if weights is None else np.asarray(weights, dtype=np.float64)
        with np.errstate(divide="ignore"):
            ratio = np.log2(w / self.prior)
        change = np.where(w > 0, -self.drop * ratio, np.inf)
        return change if self.residual is None else change + self.residual

    def predicted_gain(self, weights: np.ndarray | None = None) -> float:
        """Predicted drop of the mean log-loss at ``weights`` (default w*), in nats: log
        geo_ppl falls by this. w* maximises it over the simplex (within the floors)."""
        return float(-np.mean(self.domain_change(weights)))

    @property
    def gain_pct(self) -> float:
        """The predicted change of geo_ppl at w*, in percent (negative = better)."""
        return 100.0 * math.expm1(-self.predicted_gain())

    def worst_pct(self, weights: np.ndarray | None = None) -> float:
        """The predicted change of worst_ppl (the highest domain perplexity) at ``weights``
        (default w*) vs the arm's, in percent (inf if a domain is starved)."""
        after = float(np.max(self.loss + self.domain_change(weights)))
        return (
            100.0 * math.expm1(after - float(np.max(self.loss)))
            if math.isfinite(after)
            else math.inf
        )


def static_mixture(record: RunRecord, domains: Sequence[str], tol: float = 1e-6) -> np.ndarray:
    """The run's mixture (``mix/weight/<d>`` of its train log); DataError when it changes."""
    rows = [r for r in record.train_log if all(WEIGHT + d in r for d in domains)]
    if not rows:
        raise DataError(f"{record.run_dir}: no {WEIGHT}* rows for {list(domains)}")
    w = np.array([[float(r[WEIGHT + d]) for d in domains] for r in rows])
    moved = float(np.ptp(w, axis=0).max())
    if moved > tol:
        raise DataError(
            f"{record.run_dir}: its mixture changes during the run (by up to {moved:.3g}); "
            "the headroom estimate needs a static-mixture arm (uniform, natural, fixed, ...)"
        )
    return w[0]


def finished_runs(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The usable runs (``ok``) by seed; DataError when one has not reached its
    ``train.max_steps`` yet (a run folder still training reads as done up to its last eval, and
    drops over the wrong doubling of steps would be taken for the budget's)."""
    runs = sorted((r for r in records if r.ok), key=lambda r: r.seed)
    for r in runs:
        train = r.config.get("train")
        max_steps = train.get("max_steps") if isinstance(train, dict) else None
        if isinstance(max_steps, int) and max(r.eval_steps, default=0) < max_steps:
            raise DataError(
                f"{r.run_dir}: evaluated up to step {max(r.eval_steps, default=0)} of "
                f"{max_steps}; it is still training or stopped early (resume it to the end)"
            )
    return runs


def arm_runs(records: Sequence[RunRecord], arm: str | None = None) -> list[RunRecord]:
    """The records of one arm: ``arm``, else the only arm, else ``uniform``; DataError naming
    the arms there are otherwise."""
    arms = sorted({r.method for r in records})
    if arm is None:
        arm = arms[0] if len(arms) == 1 else "uniform"
    if arm not in arms:
        raise DataError(f"no runs of arm {arm!r} (arms: {arms}); name the static-mixture arm")
    return [r for r in records if r.method == arm]


def headroom(
    records: Sequence[RunRecord],
    step: int | None = None,
    keep_hardest: int = 0,
    *,
    min_weight: float = 0.0,
    guard_worst: bool = False,
    check: Sequence[RunRecord] = (),
) -> Headroom:
    """The estimate from the finished runs of one static-mixture arm (one per seed).

    ``step`` is t (default: the last eval step all runs reached); ``keep_hardest = k`` keeps the
    k domains with the highest mean loss at t at least at their share of the arm's mixture;
    ``min_weight`` is a floor under every domain; ``guard_worst`` adds the floors under which no
    domain's predicted loss rises above the highest loss at t (:func:`worst_floors`), corrected
    by what ``check`` runs (the same proxy at a guarded w*) measured beyond the model
    (:func:`transfer_residual`).
    DataError when the runs cannot give it (no finished run, a changing mixture, no evals at
    t / 2 and t, no domain whose loss fell).
    """
    runs = finished_runs(records)
    if not runs:
        raise DataError("headroom: no finished run of the arm (status done with a final eval)")
    domains = tuple(runs[0].domains)
    if not domains or not all(r.eval_steps for r in runs):
        raise DataError("headroom: the runs have no per-domain eval curve (eval/<domain>/loss)")
    t = step if step is not None else min(max(r.eval_steps) for r in runs)
    prior = static_mixture(runs[0], domains)
    if (prior <= 0).any():
        unsampled = [d for d, p in zip(domains, prior, strict=True) if p <= 0]
        raise DataError(f"headroom: the arm never samples {unsampled}; their drop says nothing")
    ends = np.array([[_loss_at(r, d, t) for d in domains] for r in runs])
    starts = np.array([[_loss_at(r, d, t / 2) for d in domains] for r in runs])
    drops = starts - ends
    drop = drops.mean(axis=0)
    if (drop <= 0).all():
        raise DataError(f"headroom: no domain's loss fell between steps {t / 2:g} and {t}")
    floors = np.full(len(domains), float(min_weight))
    if keep_hardest > 0:
        hardest = np.argsort(-ends.mean(axis=0), kind="stable")[:keep_hardest]
        floors[hardest] = np.maximum(floors[hardest], prior[hardest])
    loss = ends.mean(axis=0)
    residual = None
    if check:
        if not guard_worst:
            raise DataError("headroom: checked runs correct the worst-domain guard; set it too")
        residual = transfer_residual(prior, drop, loss, check, domains, int(t))
    if guard_worst:
        floors = np.maximum(floors, worst_floors(prior, drop, loss, residual))
        if floors.sum() > 1.0:  # the residuals ask more than there is: the closest mixture
            floors = floors / floors.sum()
    return Headroom(
        step=int(t),
        domains=domains,
        prior=prior,
        drop=drop,
        drop_std=drops.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(domains)),
        optimum=optimum(drop, floors),
        floors=floors,
        seeds=tuple(r.seed for r in runs),
        loss=loss,
        residual=residual,
    )


def transfer_residual(
    prior: np.ndarray,
    drop: np.ndarray,
    loss: np.ndarray,
    check: Sequence[RunRecord],
    domains: Sequence[str],
    step: int,
) -> np.ndarray:
    """What the own-token model missed at a checked mixture, per domain, in nats.

    ``check`` are finished runs of the same proxy at one static mixture w_c (usually the guarded
    w* of the same arm; one per seed). ``r_i = (L_i(w_c) - L_i(p)) + d_i log2(w_c,i / p_i)``:
    the measured change of each domain's loss at ``step`` minus the change its own tokens
    explain. A domain that learns from the ones w_c cuts (python_code from python_tests, say)
    comes out positive; the guard then gives it that much less slack."""
    runs = finished_runs(check)
    if not runs:
        raise DataError("headroom: no finished checked run (status done with a final eval)")
    missing = [d for d in domains if d not in runs[0].domains]
    if missing:
        raise DataError(f"headroom: the checked runs do not evaluate {missing}")
    mixture = static_mixture(runs[0], domains)
    for r in runs[1:]:
        other = static_mixture(r, domains)
        if np.abs(other - mixture).max() > 1e-3:
            raise DataError(
                f"headroom: the checked runs {runs[0].run_dir} and {r.run_dir} trained at "
                "different mixtures; check one mixture (one w* per arm)"
            )
    if (mixture <= 0).any():
        raise DataError("headroom: the checked mixture leaves a domain out; nothing to compare")
    measured = np.array([[_loss_at(r, d, step) for d in domains] for r in runs]).mean(axis=0)
    return (measured - loss) + drop * np.log2(mixture / prior)


@dataclass(frozen=True)
class ModelCheck:
    """The own-token model of a baseline arm against a static arm's runs, paired by seed."""

    domains: tuple[str, ...]
    seeds: tuple[int, ...]
    step: int
    mixtures: np.ndarray  # (n, K): each arm run's static mixture w
    measured: np.ndarray  # (n, K): L_i(arm run) - L_i(same-seed baseline run) at step, nats
    predicted: np.ndarray  # (n, K): -d_i log2(w_i / p_i), d and p of the baseline

    @property
    def scale(self) -> float:
        """kappa minimising ||measured - kappa predicted||: how many times larger the measured
        changes are than the model's (1 = right size; nan when the model predicts no change)."""
        norm = float(np.sum(self.predicted**2))
        return float(np.sum(self.measured * self.predicted) / norm) if norm > 0 else math.nan

    def rmse(self, scale: float = 1.0) -> float:
        """Root mean square of measured - scale x predicted over seeds and domains, in nats."""
        return float(np.sqrt(np.mean((self.measured - scale * self.predicted) ** 2)))


def model_check(
    base: Headroom, baseline: Sequence[RunRecord], arm: Sequence[RunRecord]
) -> ModelCheck:
    """How well ``base`` (the :func:`headroom` of the ``baseline`` runs) predicts ``arm``: finished
    runs at static mixtures (one per seed, each its own, e.g. the headroom arm at each seed's
    w*), each compared with the same seed's baseline run at ``base.step``. DataError when no
    seed has both, or a run leaves a domain out (the model says nothing there)."""
    by_seed = {r.seed: r for r in finished_runs(baseline)}
    pairs = [(r, by_seed[r.seed]) for r in finished_runs(arm) if r.seed in by_seed]
    if not pairs:
        raise DataError("headroom: no seed has a finished run of both the arm and the baseline")
    mixtures = np.array([static_mixture(r, base.domains) for r, _ in pairs])
    if (mixtures <= 0).any():
        raise DataError("headroom: an arm run leaves a domain out; its change is not predicted")
    measured = np.array(
        [
            [_loss_at(r, d, base.step) - _loss_at(b, d, base.step) for d in base.domains]
            for r, b in pairs
        ]
    )
    return ModelCheck(
        domains=base.domains,
        seeds=tuple(r.seed for r, _ in pairs),
        step=base.step,
        mixtures=mixtures,
        measured=measured,
        predicted=-base.drop * np.log2(mixtures / base.prior),
    )


def seeds_needed(gain_pct: float, diff_std: float, max_seeds: int = 10_000) -> int | None:
    """Fewest paired seeds whose 95% t half-width t_{0.975,n-1} s / sqrt(n) falls below
    |gain_pct| for a per-seed difference spread s = ``diff_std`` (None: more than max)."""
    if diff_std <= 0:
        return 2
    for n in range(2, max_seeds + 1):
        if t_quantile_975(n - 1) * diff_std / math.sqrt(n) < abs(gain_pct):
            return n
    return None


def paired_spread(
    runs: Sequence[RunRecord], base_by_seed: Mapping[int, RunRecord], key: str = GEO
) -> tuple[float | None, int]:
    """(sample std of the per-seed % differences of the final ``key`` vs the same-seed
    baseline run, number of pairs); None with fewer than two pairs."""
    diffs = []
    for r in runs:
        base = base_by_seed.get(r.seed)
        if base is None or key not in r.final_eval or key not in base.final_eval:
            continue
        m, b = r.final_eval[key], base.final_eval[key]
        if math.isfinite(m) and math.isfinite(b) and b > 0:
            diffs.append(100.0 * (m / b - 1.0))
    return spread(diffs).std if len(diffs) > 1 else None, len(diffs)


def headroom_note(
    groups: Mapping[str, Sequence[RunRecord]],
    base_by_seed: Mapping[int, RunRecord],
    baseline: str,
) -> str | None:
    """A report note: the baseline's headroom, and the seeds the suite's paired noise would need
    to see it. None when the baseline is not a static mixture evaluated at t / 2 and t."""
    try:
        h = headroom(groups[baseline])
    except DataError:
        return None
    tilt = ", ".join(f"{d} {w:.2f}" for d, w in zip(h.domains, h.optimum, strict=True))
    text = (
        f"headroom: by {baseline}'s held-out loss drop over steps {h.step // 2}-{h.step} (per "
        f"domain, per doubling), the best static mixture of the same tokens (w* ∝ that drop: "
        f"{tilt}) would change geo_ppl by about {h.gain_pct:+.1f}% vs {baseline} (a first-order "
        "estimate: it ignores transfer between domains and repetition)"
    )
    noise = []
    for name, runs in groups.items():
        if name != baseline:
            std, n = paired_spread(runs, base_by_seed)
            if std is not None:
                noise.append((std, name, n))
    if noise:
        std, name, n = sorted(noise)[len(noise) // 2]
        need = seeds_needed(h.gain_pct, std)
        text += (
            f"; the paired geo_ppl differences here spread by {std:.1f}% from seed to seed "
            f"(median over methods: {name}, {n} seeds), so a 95% interval as narrow as that "
            f"gain needs {need if need is not None else 'more than 10000'} paired seeds"
        )
    checks = []
    for name, runs in groups.items():
        if name == baseline:
            continue
        try:
            mc = model_check(h, groups[baseline], runs)
        except DataError:  # not a static arm (or no seed in common): nothing to check
            continue
        if np.abs(mc.predicted).max() > 1e-9:
            pct = [100.0 * math.expm1(float(x.mean())) for x in (mc.predicted, mc.measured)]
            checks.append(f"{name} {pct[0]:+.1f}% predicted, {pct[1]:+.1f}% measured")
    if checks:
        text += (
            "; the same model against the static arms at other mixtures (paired geo_ppl change, "
            f"mean over seeds): {'; '.join(checks)}"
        )
    return text + " (scripts/mixture_headroom.py prints the table, --explain ARM per domain)"


def _loss_at(record: RunRecord, domain: str, step: float) -> float:
    steps, values = record.curve(f"eval/{domain}/loss")
    ok = [(s, v) for s, v in zip(steps, values, strict=True) if s > 0 and math.isfinite(v)]
    if not ok or step < ok[0][0] or step > ok[-1][0]:
        raise DataError(
            f"{record.run_dir}: no eval of {domain} around step {step:g} (eval rows at "
            f"{[s for s, _ in ok]}); the headroom estimate needs evals from t / 2 to t"
        )
    xs, ys = zip(*ok, strict=True)
    return float(np.interp(math.log2(step), np.log2(xs), ys))
