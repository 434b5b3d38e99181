"""AC-ODM rewards, one value per domain: the paper's train-gradient alignment (METHODS.md §2.2)
and mixlab's held-out alignment, loss and progress.

**alignment** (the paper). Given the mean gradient g_i of each domain on the selected parameters
(rows of a K x P matrix):

1. A = G G^T with diag(A) := 0                       (pairwise inner products, K x K)
2. r~_i = sum_{j != i} A_ij / (mean_k ||g_k|| + 1e-6)  (``weighting=uniform``, the release)
        = sum_{j != i} w_j A_ij / (...)                (``weighting=mixture``, an extension)
3. r = clip3(z(r~))                                    (relative: mean ~0 across domains)

A domain whose gradients point where the others' point gets a high reward (constructive
interference): for a mixed update d = sum_i w_i g_i the first-order loss decrease is
proportional to ||d||^2, whose derivative in w_i at uniform w is proportional to r~_i.

Absent domains (count 0, only possible with the floor off) are excluded from the mean norm and
from z, and get r = r~ = 0; the caller stores ``present`` as the transition mask. ``pre_clip``
(release: 999) clamps r~ before z; it is not scale-free (r~ is in gradient-norm units), so it
is off by default.

The Gram matrix is computed once (:func:`gram_matrix`) and also gives the gradient norms and
the pairwise cosines (:func:`cosine_matrix`) for the logs.

Why mixlab does not use it by default (measured in ``scripts/acodm_mechanism.py``): the z-score
makes the reward zero-sum with unit spread at every step, even when the gradients are pure
noise, and dropping the diagonal scores how *central* a domain is, not what sampling it does to
held-out loss.

**heldout_alignment** (mixlab; DoGE, arXiv 2310.15393). With g_i the mean training gradient of
domain i on the captured matrices and h = sum_d c_d h_d the gradient of the mean held-out loss
over the domains (c uniform: mean log-loss = log geo-ppl; h_d from one small backward on
validation windows every k steps),

    r~_i = <g_i, h> / (||h|| mean_k ||g_k|| + 1e-12)

is, to first order, how much one SGD step on domain i lowers the held-out loss of every domain,
relative to the others (the self term <g_i, h_i> is kept: a domain that shares nothing with the
others still lowers its own loss; g and h come from different tokens, so the self term has no
noise bias). :class:`RunningScale` centres it over the domains and divides by the running RMS
of that spread, ``r = (r~ - mean r~) / sqrt(EMA(mean_i (r~_i - mean r~)^2))``: a noisy step
stays small instead of being blown up to unit spread, and the scale is comparable across model
sizes. :func:`heldout_alignment` computes r~.

**loss** (mixlab). r~_i = domain i's mean training loss of the step, centred and running-scaled
like the held-out alignment (computed in the policy from the Feedback's loss sums; no gradient
capture). ``scripts/acodm_mechanism.py`` (B5) found it the only reward whose rank correlation
with the 20-step effect of tilting the mixture toward a domain was positive at every
checkpoint.

**progress** (mixlab). The marginal gain of sampling a domain: how much its loss falls per
token of it. If domain i's loss follows L_i = E_i + A_i n_i^-alpha in its own tokens n_i (no
transfer), one more token of i lowers the mean loss over the domains (log geo-ppl) by
alpha (L_i - E_i) / n_i, and L_i(n_i / 2) - L_i(n_i) = (2^alpha - 1)(L_i - E_i), so
:class:`ProgressReward`'s ``raw_i = (L_i(n_i / 2) - L_i(n_i)) T / n_i`` (the loss drop over the
last doubling of the domain's own tokens, T all tokens so far) is that gain times a constant near
ln 2, in nats per doubling per unit cumulative share. The window is as long as the domain's
own recent history: a fast transient counts while it is in the window and leaves it once the
domain's tokens have doubled past it. (The first version, the slow-minus-fast loss EMA gap over
a ~50-step window per unit of recent share, is on branch ``exp/doubling-both``; measured against
it in the README: -1.4% +- 2.9 geo_ppl at 1200 steps, 4/5 seeds.) Centred and running-scaled
like ``loss``. Unlike ``loss``, which ranks domains by loss *level* (so an easy domain goes to
the bound however fast it is still learning, and an unlearnable high-entropy one can rank high),
it ranks by the return on a token: a domain at its floor E_i earns nothing, and a domain pushed
down but still improving earns more per token as its cumulative share falls.

Also here: the shared standardisation helpers :func:`zscore` and :func:`clip3` (§0), and
:func:`select_reward_blocks` turning the relative ``reward_layers`` into block indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mixlab.errors import ConfigError, ResumeError

Z_EPS = 1e-8
NORM_EPS = 1e-6
CLIP = 3.0


def zscore(x: np.ndarray) -> np.ndarray:
    """(x - mean) / (unbiased std + 1e-8); zeros for one element or zero spread."""
    x = np.asarray(x, dtype=np.float64)
    if x.size <= 1 or float(x.max()) == float(x.min()):
        return np.zeros_like(x)
    return (x - x.mean()) / (float(x.std(ddof=1)) + Z_EPS)


def clip3(x: np.ndarray) -> np.ndarray:
    """Clamp to [-3, 3]."""
    return np.clip(x, -CLIP, CLIP)


def gram_matrix(grad_mean: np.ndarray, present: np.ndarray) -> np.ndarray:
    """(K, K) float64 inner products of the present rows (one matmul); 0 for absent ones."""
    g = np.asarray(grad_mean)
    mask = np.asarray(present, dtype=bool)
    k = mask.shape[0]
    if g.ndim != 2 or g.shape[0] != k:
        raise ValueError(f"alignment_reward: grad_mean must be (K={k}, P), got {g.shape}")
    gram = np.zeros((k, k))
    idx = np.flatnonzero(mask)
    if idx.size:
        rows = (g if idx.size == k else g[idx]).astype(np.float64, copy=False)  # no copy if all
        gram[np.ix_(idx, idx)] = rows @ rows.T
    return gram


def reward_from_gram(
    gram: np.ndarray,
    present: np.ndarray,
    *,
    weighting: str = "uniform",
    weights: np.ndarray | None = None,
    pre_clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-4 of the rule on a precomputed Gram matrix; see :func:`alignment_reward`."""
    mask = np.asarray(present, dtype=bool)
    k = mask.shape[0]
    reward, raw = np.zeros(k), np.zeros(k)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return reward, raw
    a = np.array(gram, dtype=np.float64)[np.ix_(idx, idx)]
    norms = np.sqrt(np.clip(np.diag(a), 0.0, None))
    np.fill_diagonal(a, 0.0)
    if weighting == "uniform":
        cross = a.sum(axis=1)
    elif weighting == "mixture":
        if weights is None:
            raise ValueError("alignment_reward: weighting='mixture' needs the mixture weights")
        cross = a @ np.asarray(weights, dtype=np.float64)[idx]
    else:
        raise ValueError(f"alignment_reward: unknown weighting {weighting!r}")
    r_tilde = cross / (float(norms.mean()) + NORM_EPS)
    if pre_clip is not None:
        r_tilde = np.clip(r_tilde, -pre_clip, pre_clip)
    raw[idx] = r_tilde
    reward[idx] = clip3(zscore(r_tilde))
    return reward, raw


def alignment_reward(
    grad_mean: np.ndarray,
    present: np.ndarray,
    *,
    weighting: str = "uniform",
    weights: np.ndarray | None = None,
    pre_clip: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-domain gradient-alignment reward.

    Args:
        grad_mean: (K, P) mean gradient of each domain; rows of absent domains are ignored.
        present: (K,) bool, False for domains without gradients this step.
        weighting: ``uniform`` or ``mixture`` (then ``weights`` (K,) is required).
        pre_clip: clamp r~ to [-pre_clip, pre_clip] before the z-score (release: 999).

    Returns:
        (reward, raw): both (K,) float64; 0 for absent domains.
    """
    return reward_from_gram(
        gram_matrix(grad_mean, present),
        present,
        weighting=weighting,
        weights=weights,
        pre_clip=pre_clip,
    )


def heldout_direction(heldout_sum: np.ndarray, heldout_count: np.ndarray) -> np.ndarray | None:
    """h = mean over the domains with held-out tokens of their mean held-out gradient (P,).

    None when no domain has held-out tokens.
    """
    counts = np.asarray(heldout_count, dtype=np.float64)
    sums = np.asarray(heldout_sum)
    if sums.ndim != 2 or sums.shape[0] != counts.shape[0]:
        raise ValueError(
            f"heldout_direction: heldout_grad_sum must be (K={counts.shape[0]}, P), "
            f"got {sums.shape}"
        )
    present = counts > 0
    if not present.any():
        return None
    mean = sums[present].astype(np.float64) / counts[present, None]
    return mean.mean(axis=0)


def heldout_alignment(
    grad_mean: np.ndarray, present: np.ndarray, heldout: np.ndarray
) -> np.ndarray:
    """r~_i = <g_i, h> / (||h|| mean_k ||g_k||) for the present domains, 0 for the others."""
    g = np.asarray(grad_mean)
    mask = np.asarray(present, dtype=bool)
    h = np.asarray(heldout, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != mask.shape[0] or g.shape[1] != h.shape[0]:
        raise ValueError(
            f"heldout_alignment: grad_mean {g.shape}, present {mask.shape} and the held-out "
            f"gradient {h.shape} do not fit"
        )
    out = np.zeros(mask.shape[0])
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return out
    rows = g[idx].astype(np.float64, copy=False)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    denom = float(np.linalg.norm(h)) * float(norms.mean()) + 1e-12
    out[idx] = (rows @ h) / denom
    return out


class RunningScale:
    """Centre a per-domain reward over the present domains, divide by a running RMS spread.

    ``r = (x - mean x) / sqrt(v_t)`` with ``v_t`` the bias-corrected EMA (factor ``beta``) of
    ``mean_i (x_i - mean x)^2``. Deterministic; ``state_dict`` holds the EMA.
    """

    def __init__(self, beta: float = 0.98) -> None:
        self.beta = float(beta)
        self._ema = 0.0
        self._weight = 0.0  # sum of EMA weights so far (bias correction)

    def __call__(self, x: np.ndarray, present: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        mask = np.asarray(present, dtype=bool)
        out = np.zeros_like(x)
        if mask.sum() < 2:
            return out
        centred = x[mask] - x[mask].mean()
        self._ema = self.beta * self._ema + (1.0 - self.beta) * float((centred**2).mean())
        self._weight = self.beta * self._weight + (1.0 - self.beta)
        scale = math.sqrt(self._ema / self._weight) if self._weight > 0 else 0.0
        if scale > 0:
            out[mask] = centred / scale
        return out

    @property
    def scale(self) -> float:
        return math.sqrt(self._ema / self._weight) if self._weight > 0 else 0.0

    def state_dict(self) -> dict[str, float]:
        return {"ema": self._ema, "weight": self._weight, "beta": self.beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._ema, self._weight = float(state["ema"]), float(state["weight"])


class ProgressReward:
    """raw r~ of ``reward: progress``: each domain's loss drop over the last doubling of its own
    tokens, per unit of its cumulative share.

    With L_i = E_i + A_i n_i^-alpha, L_i(n_i / 2) - L_i(n_i) = (2^alpha - 1)(L_i - E_i), so
    ``drop_i / n_i`` is proportional (factor (2^alpha - 1) / alpha ~ ln 2 for small alpha) to
    the marginal return of a token, alpha (L_i - E_i) / n_i, measured over a window as long as
    the domain's own recent history: a fast transient early in training leaves the window once
    the domain's tokens have doubled past it. ``raw_i = drop_i * T / n_i`` (T = all tokens so
    far) is in nats per doubling per unit cumulative share, so its scale does not shrink with
    time.

    The loss is an EMA of the domain's per-step training loss whose window grows with the
    domain's tokens: by default each step's rate is its share of one history spacing,
    ``rate_i = min(1, tokens_i / ((2^(1/points_per_doubling) - 1) n_i))``, so the EMA averages
    the last ~9% of the domain's tokens (8 points per doubling) at every step. That window is
    a fixed fraction of the doubling, so the estimate keeps its scale-free meaning (for a power
    law both ends of the doubling lag by the same factor and the drop keeps its ranking), and
    its noise falls as the run goes on (a fixed rate of 0.1 kept it at one 20-step average, as
    large as the spread between domains at 1000 steps; ``rate`` fixes the rate). Its history
    is kept at log-spaced token counts (``points_per_doubling`` per doubling; about
    8 x log2(n) points per domain) and read at n_i / 2 by linear interpolation in log2 n. A
    domain whose history does not reach back to n_i / 2 yet (its first steps) gets r~ = 0.
    Deterministic; ``state_dict`` holds the EMAs and histories.
    """

    def __init__(
        self, num_domains: int, rate: float | None = None, points_per_doubling: int = 8
    ) -> None:
        if rate is not None and not 0.0 < rate <= 1.0:
            raise ValueError(f"ProgressReward: rate must be in (0, 1], got {rate}")
        if points_per_doubling < 1:
            raise ValueError(
                f"ProgressReward: points_per_doubling must be >= 1, got {points_per_doubling}"
            )
        self.rate = None if rate is None else float(rate)
        self.spacing = 1.0 / points_per_doubling
        self._span = 2.0**self.spacing - 1.0  # one history spacing, as a fraction of n
        self._loss = np.full(num_domains, np.nan)
        self._tokens = np.zeros(num_domains)
        self._log_n: list[list[float]] = [[] for _ in range(num_domains)]
        self._hist: list[list[float]] = [[] for _ in range(num_domains)]

    def loss_at(self, domain: int, tokens: float) -> float:
        """The domain's EMA loss when it had seen ``tokens`` tokens; NaN before its history."""
        xs, ys = self._log_n[domain], self._hist[domain]
        if tokens <= 0 or not xs or math.log2(tokens) < xs[0]:
            return math.nan
        return float(np.interp(math.log2(tokens), xs, ys))

    @property
    def loss(self) -> np.ndarray:
        """Each domain's EMA loss now (K,), NaN before its first step."""
        return self._loss.copy()

    def drops(self) -> np.ndarray:
        """Each domain's EMA loss drop over the last doubling of its own tokens (K,), in nats
        (d_i of :mod:`mixlab.mixing.own_tokens`); NaN while its history is shorter."""
        return np.array(
            [self.loss_at(i, n / 2.0) - self._loss[i] for i, n in enumerate(self._tokens)]
        )

    def __call__(self, mean_loss: np.ndarray, token_count: np.ndarray) -> np.ndarray:
        """r~ (K,) from the step's per-domain mean loss (NaN if absent) and token counts."""
        loss = np.asarray(mean_loss, dtype=np.float64)
        tokens = np.asarray(token_count, dtype=np.float64)
        k = self._loss.shape[0]
        if loss.shape != (k,) or tokens.shape != (k,):
            raise ValueError(
                f"ProgressReward: mean_loss {loss.shape} and token_count {tokens.shape} must "
                f"both be ({k},)"
            )
        tokens = np.where(np.isfinite(tokens) & (tokens > 0), tokens, 0.0)
        seen = np.isfinite(loss) & (tokens > 0)
        new = seen & np.isnan(self._loss)
        self._loss[new] = loss[new]
        self._tokens += tokens
        upd = seen & ~new
        if self.rate is None:
            rate = np.minimum(1.0, tokens[upd] / (self._span * self._tokens[upd]))
        else:
            rate = np.full(int(upd.sum()), self.rate)
        self._loss[upd] += rate * (loss[upd] - self._loss[upd])
        raw = np.zeros(k)
        total = float(self._tokens.sum())
        for i in np.flatnonzero(seen):
            x = math.log2(self._tokens[i])
            if not self._log_n[i] or x >= self._log_n[i][-1] + self.spacing:
                self._log_n[i].append(x)
                self._hist[i].append(float(self._loss[i]))
            before = self.loss_at(int(i), self._tokens[i] / 2.0)
            if math.isfinite(before):
                raw[i] = (before - self._loss[i]) * total / self._tokens[i]
        return raw

    def state_dict(self) -> dict[str, list[float] | list[list[float]]]:
        return {
            "loss": self._loss.tolist(),
            "tokens": self._tokens.tolist(),
            "log_n": [list(x) for x in self._log_n],
            "hist": [list(y) for y in self._hist],
        }

    def load_state_dict(self, state: dict[str, list[float] | list[list[float]]]) -> None:
        missing = {"loss", "tokens", "log_n", "hist"} - set(state)
        if missing:  # the first (EMA-gap) version of reward: progress kept other fields
            raise ResumeError(
                f"acodm reward: progress: the checkpoint's reward state lacks {sorted(missing)} "
                "(saved by an earlier mixlab whose progress reward used loss EMAs); restart "
                "the run, or resume it with the mixlab that saved it"
            )
        self._loss = np.array(state["loss"], dtype=np.float64)
        self._tokens = np.array(state["tokens"], dtype=np.float64)
        self._log_n = [[float(v) for v in x] for x in state["log_n"]]  # type: ignore[union-attr]
        self._hist = [[float(v) for v in y] for y in state["hist"]]  # type: ignore[union-attr]


def cosine_matrix(gram: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities from a Gram matrix; 0 where a norm is 0."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    outer = np.outer(norms, norms)
    return np.divide(gram, outer, out=np.zeros_like(gram, dtype=np.float64), where=outer > 0)


def select_reward_blocks(num_layers: int, reward_layers: Sequence[int]) -> list[int]:
    """Block indices for ``reward_layers`` (negative = from the end; out of range dropped).

    Duplicates are removed, order kept. Raises ConfigError when none is left.
    """
    blocks: list[int] = []
    for i in reward_layers:
        b = i if i >= 0 else num_layers + i
        if 0 <= b < num_layers and b not in blocks:
            blocks.append(b)
    if not blocks:
        raise ConfigError(
            f"mixing.acodm.reward_layers: none of {list(reward_layers)} is a block of this "
            f"{num_layers}-layer model; use indices in [-{num_layers}, {num_layers - 1}]"
        )
    return blocks
