"""AC-ODM state vector s_t: a summary of training the actor reads (METHODS.md §2.3, and mixlab's).

**paper** (:class:`StateBuilder`, ``state: paper``). Built after the LM update of step t, six
groups in this order (dim = 3K + 2D + 1):

====  ==================  ===  ==========================================================
 #    group               dim  definition
====  ==================  ===  ==========================================================
 1    loss                 K   l_i of this step (pre-update); an absent domain repeats its
                               previous value (before the first observation: the mean of
                               the present domains)
 2    loss change          K   l_t - l_ref; zeros at the first step
 3    counts               K   micro-batches (or sequences) of each domain this step
 4    weight norms         D   ||W_b||_F of the MLP down-projection at each depth point
 5    weight-norm change   D   ||W_b,t - W_b,ref||_F; zeros at the first step
 6    progress             1   progress_scale * t / T   (not standardised)
====  ==================  ===  ==========================================================

Groups 1-5 each go through clip3(z(.)) on their own, which removes width and scale effects, so
a policy trained on a small proxy reads the same kind of state on a bigger target. The
reference of groups 2 and 5 is ``delta_reference``: ``previous`` (step t-1; mixlab) or
``first`` (the run's first step, never refreshed; release). Depth points map to blocks by
b = floor(q (L - 1) + 0.5) (:func:`select_depth_blocks`).

The builder never sees the model. The trainer measures the D matrices with a
:class:`~mixlab.train.probes.WeightNormTracker` (which keeps the reference copies the rule needs
and checkpoints them) and passes the two D-vectors in.

Which of these features mean the same thing on a small proxy and a big target (measured in
``scripts/acodm_mechanism.py``): the depth norms do not (a 2-layer proxy maps the five depth
points to blocks [0, 0, 1, 1, 1], so the groups take two distinct values), the counts are the
actor's own previous action (a copy of a_t that closes the loop "sampled X, so X is good"),
and the one-step loss change is noise (per-step loss std ~0.1-0.5 nats against a true change of
~0.005).

**mixlab** (:class:`MixlabStateBuilder`, ``state: mixlab``; dim = 3K + 1, or 4K + 1 with
``state_gain``), from the training losses and token counts alone, so a frozen target needs no
probe inside the model:

====  ==================  ===  ==========================================================
 1    loss level           K   clip3(z(EMA_a of l_i)), a = ``state_ema``
 2    loss trend           K   clip3(z(EMA_{a/5} - EMA_a)): who is improving faster
 3    served share         K   clip3(log(cumulative token share_i / p0_i)): where the
                               mixture has been, relative to the prior (not z-scored)
 4    progress             1   t / T
(5)   gain                 K   ``state_gain`` only (dim 4K + 1): clip3(z(g_i)), g_i the
                               loss drop over the last doubling of domain i's tokens per
                               unit of its cumulative share (the raw ``progress`` reward,
                               :class:`~mixlab.mixing.acodm.reward.ProgressReward`)
====  ==================  ===  ==========================================================

Every group is relative across domains or to the prior, so it has the same meaning at any
model width, depth or family (the proxy and the target share the store and the budget).

Why the gain group: with ``reward: progress`` the critic must predict each domain's marginal
gain from the state. Groups 1-3 carry it only indirectly (the trend's fixed ~10-step windows
are noise against a drop measured over the domain's whole last doubling), so a frozen actor on
a target reads a state that does not show what its reward measured. With the estimate itself
in the state, the learned rule "more weight where a token still buys more" is a function of a
feature that keeps its meaning at any model size (z-scored across domains), and the tilt it
causes feeds back: a domain's gain per unit share falls as its share rises, which pushes the
mixture toward equal marginal gains. Measured (README "AC-ODM", demo corpus, 1200 steps): a
llama-tiny proxy's frozen actor drives a llama-1m target within 0.02-0.05 total variation of
the target's own online actor's mixture with this group, 0.08-0.15 without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixlab.errors import ConfigError
from mixlab.mixing.acodm.options import DELTA_REFERENCES
from mixlab.mixing.acodm.reward import CLIP, clip3, zscore


def select_depth_blocks(num_layers: int, depth_points: Sequence[float]) -> list[int]:
    """Block b = floor(q (L - 1) + 0.5) for each relative depth q (duplicates kept: D fixed)."""
    if num_layers < 1:
        raise ConfigError(f"AC-ODM state: the model has {num_layers} layers; need at least 1")
    blocks = []
    for q in depth_points:
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"mixing.acodm.depth_points: {q!r} is not in [0, 1]")
        blocks.append(math.floor(q * (num_layers - 1) + 0.5))
    return blocks


@dataclass(frozen=True)
class StateSpec:
    """Everything that fixes the meaning of each state coordinate (checked on policy load).

    ``kind`` is ``paper`` (depth fields used) or ``mixlab`` (``ema`` and ``gain`` used; D = 0).
    """

    num_domains: int
    num_depths: int
    depth_points: tuple[float, ...]
    delta_reference: str
    progress_scale: float
    clip: float = CLIP
    kind: str = "paper"
    ema: float = 0.0
    gain: bool = False

    @property
    def dim(self) -> int:
        if self.kind == "mixlab":
            return (4 if self.gain else 3) * self.num_domains + 1
        return 3 * self.num_domains + 2 * self.num_depths + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "K": self.num_domains,
            "D": self.num_depths,
            "depth_points": [float(q) for q in self.depth_points],
            "delta_reference": self.delta_reference,
            "progress_scale": float(self.progress_scale),
            "clip": float(self.clip),
            "ema": float(self.ema),
            "gain": bool(self.gain),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StateSpec:
        return cls(
            num_domains=int(d["K"]),
            num_depths=int(d["D"]),
            depth_points=tuple(float(q) for q in d["depth_points"]),
            delta_reference=str(d["delta_reference"]),
            progress_scale=float(d["progress_scale"]),
            clip=float(d["clip"]),
            kind=str(d.get("kind", "paper")),  # format-1 files hold paper states
            ema=float(d.get("ema", 0.0)),
            gain=bool(d.get("gain", False)),  # files before state_gain: no gain group
        )


class StateBuilder:
    """Turns one step's measurements into s_t; keeps the loss history the groups need."""

    def __init__(
        self,
        num_domains: int,
        num_depths: int,
        *,
        delta_reference: str = "previous",
        progress_scale: float = 1.0,
    ) -> None:
        assert delta_reference in DELTA_REFERENCES, delta_reference
        self.num_domains, self.num_depths = num_domains, num_depths
        self.delta_reference = delta_reference
        self.progress_scale = float(progress_scale)
        self._last_loss: np.ndarray | None = None  # filled loss vector of the previous step
        self._ref_loss: np.ndarray | None = None  # reference for group 2

    @property
    def dim(self) -> int:
        return 3 * self.num_domains + 2 * self.num_depths + 1

    @property
    def refresh_reference(self) -> bool:
        """True when the weight-norm reference moves every step (``previous``)."""
        return self.delta_reference == "previous"

    def build(
        self,
        mean_loss: np.ndarray,
        counts: np.ndarray,
        param_norms: np.ndarray,
        param_diff_norms: np.ndarray,
        step: int,
        total_steps: int,
    ) -> np.ndarray:
        """s_t as float64 (dim,). ``mean_loss`` has NaN (or inf) for absent domains."""
        k, d = self.num_domains, self.num_depths
        loss = np.asarray(mean_loss, dtype=np.float64).copy()
        shapes = {
            "mean_loss": (loss, k),
            "counts": (np.asarray(counts), k),
            "param_norms": (np.asarray(param_norms), d),
            "param_diff_norms": (np.asarray(param_diff_norms), d),
        }
        for name, (arr, n) in shapes.items():
            if arr.shape != (n,):
                raise ValueError(f"AC-ODM state: {name} must have shape ({n},), got {arr.shape}")
        missing = ~np.isfinite(loss)
        if missing.any():
            if self._last_loss is not None:
                loss[missing] = self._last_loss[missing]
            else:  # nothing to repeat yet: a neutral value for the z-score
                loss[missing] = float(loss[~missing].mean()) if (~missing).any() else 0.0
        if self._ref_loss is None:
            self._ref_loss = loss.copy()
        delta = loss - self._ref_loss
        if self.delta_reference == "previous":
            self._ref_loss = loss.copy()
        self._last_loss = loss
        groups = [
            loss,
            delta,
            np.asarray(counts, dtype=np.float64),
            np.asarray(param_norms, dtype=np.float64),
            np.asarray(param_diff_norms, dtype=np.float64),
        ]
        parts = [clip3(zscore(g)) for g in groups]
        parts.append(np.array([self.progress_scale * step / max(total_steps, 1)]))
        return np.concatenate(parts)

    def state_dict(self) -> dict[str, Any]:
        def listed(x: np.ndarray | None) -> list[float] | None:
            return None if x is None else [float(v) for v in x]

        return {
            "delta_reference": self.delta_reference,
            "last_loss": listed(self._last_loss),
            "ref_loss": listed(self._ref_loss),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def array(x: list[float] | None) -> np.ndarray | None:
            return None if x is None else np.array(x, dtype=np.float64)

        self._last_loss = array(state["last_loss"])
        self._ref_loss = array(state["ref_loss"])


class MixlabStateBuilder:
    """The mixlab state (dim 3K + 1, or 4K + 1 with ``gain``) from per-domain training losses
    and token counts.

    ``gain``: :meth:`build` takes the step's raw ``progress`` estimate (K,) and appends it as
    group 5; the estimator (:class:`~mixlab.mixing.acodm.reward.ProgressReward`) lives in the
    policy, which feeds the same estimate to ``reward: progress``."""

    def __init__(self, prior: np.ndarray, *, ema: float = 0.1, gain: bool = False) -> None:
        self.prior = np.asarray(prior, dtype=np.float64)
        self.num_domains = int(self.prior.shape[0])
        self.ema = float(ema)
        self.gain = bool(gain)
        self._fast: np.ndarray | None = None
        self._slow: np.ndarray | None = None
        self._served = np.zeros(self.num_domains)

    @property
    def dim(self) -> int:
        return (4 if self.gain else 3) * self.num_domains + 1

    @property
    def slow_loss(self) -> np.ndarray | None:
        """The slow EMA (rate ``ema / 5``) of each domain's training loss; None before s_1."""
        return None if self._slow is None else self._slow.copy()

    def build(
        self,
        mean_loss: np.ndarray,
        token_count: np.ndarray,
        step: int,
        total_steps: int,
        gain: np.ndarray | None = None,
    ) -> np.ndarray:
        """s_t as float64 (dim,). ``mean_loss`` has NaN (or inf) for absent domains; ``gain``
        (K,), the step's raw progress estimate, is required with ``gain`` and ignored without."""
        k = self.num_domains
        loss = np.asarray(mean_loss, dtype=np.float64).copy()
        tokens = np.asarray(token_count, dtype=np.float64)
        if self.gain and gain is None:
            raise ValueError("AC-ODM state: the gain group needs the step's gain estimate")
        gains = np.zeros(k) if gain is None else np.asarray(gain, dtype=np.float64)
        for name, arr in (("mean_loss", loss), ("token_count", tokens), ("gain", gains)):
            if arr.shape != (k,):
                raise ValueError(f"AC-ODM state: {name} must have shape ({k},), got {arr.shape}")
        missing = ~np.isfinite(loss)
        if self._fast is None or self._slow is None:
            fill = float(loss[~missing].mean()) if (~missing).any() else 0.0
            loss[missing] = fill
            self._fast, self._slow = loss.copy(), loss.copy()
        else:  # an absent domain keeps its averages
            loss[missing] = self._fast[missing]
            slow_rate = self.ema / 5.0
            self._fast += self.ema * (loss - self._fast)
            self._slow += slow_rate * (loss - self._slow)
        self._served += np.where(np.isfinite(tokens), tokens, 0.0)
        total = float(self._served.sum())
        share = self._served / total if total > 0 else self.prior
        served = np.log(np.maximum(share, 1e-12) / self.prior)
        groups = [
            clip3(zscore(self._fast)),
            clip3(zscore(self._slow - self._fast)),
            clip3(served),
            np.array([step / max(total_steps, 1)]),
        ]
        if self.gain:
            groups.append(clip3(zscore(gains)))
        return np.concatenate(groups)

    def state_dict(self) -> dict[str, Any]:
        def listed(x: np.ndarray | None) -> list[float] | None:
            return None if x is None else [float(v) for v in x]

        return {
            "fast": listed(self._fast),
            "slow": listed(self._slow),
            "served": listed(self._served),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def array(x: list[float] | None) -> np.ndarray | None:
            return None if x is None else np.array(x, dtype=np.float64)

        self._fast, self._slow = array(state["fast"]), array(state["slow"])
        served = array(state["served"])
        self._served = np.zeros(self.num_domains) if served is None else served
