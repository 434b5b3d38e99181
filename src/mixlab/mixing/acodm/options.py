"""Configuration of AC-ODM (``mixing.acodm.*``): every knob of METHODS.md §2.4-2.7, and mixlab's
redesign.

Two variants (``variant``), one code path:

* ``mixlab`` (default; mixlab's own design, not the paper's): the action is a **bounded move
  around a prior mixture** p0 (``prior``: uniform | unimax | natural | file, the last
  a JSON weights file ``prior_file`` such as ``scripts/mixture_headroom.py --out`` writes),
  ``w = softmax(log p0 + (bound/2) tanh(u_phi(s)))`` so every ``|log(w_i / p0_i)| <= bound``;
  the actor maximises ``sum_i w_i Q_i - kl_coef KL(w || p0)``; the reward is each domain's
  **training loss** of the step, centred and normalised by a running scale (``reward: loss``:
  no gradient capture; ``heldout_alignment``, the alignment of each domain's training gradient
  with the gradient of a small held-out batch, DoGE-style, arXiv 2310.15393, is the switch);
  a loss-only state that means the same thing at every model size; the critic is a contextual
  bandit (``gamma`` 0) unless asked otherwise.
* ``paper``: METHODS.md §2 as specified (arXiv 2505.23878 with mixlab's small defaults):
  softmax actor with no prior or bound, train-gradient Gram reward z-scored per step, state of
  losses, counts and weight norms, DDPG bootstrap with gamma 0.95, ODM warm-up.

Fields left at ``null`` take their variant's value (:data:`VARIANT_DEFAULTS`), so every
ingredient can be switched on its own (``variant: paper`` with ``bound: 1.0`` is the paper with
a bound; ``variant: mixlab`` with ``reward: alignment`` is mixlab with the paper's reward).

Other defaults are the mixlab small defaults (§2.7): a 128 x 2 actor and critic, tau 0.005,
replay 10 000 / minibatch 32, AdamW (critic 1e-3), warm-up max(2N, 5% of T), log-space Gaussian
exploration (sigma 0.1; inside the bound for a bounded actor).

The release quirks of §2.6 are plain switches with the mixlab value as default. ``preset:
acodm_release`` sets every one of them to the value of the authors' code (see
:data:`RELEASE_SWITCHES`; it implies ``variant: paper``); name switches in ``preset_except`` to
keep your own value for them, e.g. ``preset_except: [train_actor]`` is "the release, but with
the actor actually trained". Network sizes (hidden, n_hidden, tau) are not part of the preset:
they are scale, not quirks.

:func:`resolve_options` is what the policy factory calls: it validates (errors name
``mixing.acodm.<field>``), applies the preset and the variant's defaults, and turns YAML lists
into typed lists. :func:`with_variant_defaults` fills the variant defaults alone (for code that
builds an agent from options directly).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from mixlab.errors import ConfigError
from mixlab.schema import Float, Int, Section, Str

MODES = ("auto", "online", "proxy_train", "frozen")
ROLES = ("mlp_down", "attn_out")
EXPLORATIONS = ("logit_gaussian", "release", "none")
REWARD_WEIGHTINGS = ("uniform", "mixture")
CRITIC_OUTPUTS = ("vector", "scalar")
ACTOR_OBJECTIVES = ("weighted", "mean")
WARMUP_CRITIC_TARGETS = ("td", "r_plus_gamma_r")
DELTA_REFERENCES = ("previous", "first")
LR_SCHEDULES = ("constant", "warmup_cosine")
PRESETS = ("acodm_release",)
VARIANTS = ("mixlab", "paper")
PRIORS = ("uniform", "unimax", "natural", "file")
REWARDS = ("heldout_alignment", "alignment", "loss", "progress")
LOSS_REWARDS = ("loss", "progress")  # computed from the step's losses: no gradient capture
PROGRESS_LOSSES = ("train", "heldout")
STATES = ("mixlab", "paper")
WARMUP_MIXERS = ("prior", "odm")
UNBOUNDED = "none"

# Fields whose null means "the variant's value": variant -> field -> value.
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "paper": {
        "bound": UNBOUNDED,
        "kl_coef": 0.0,
        "reward": "alignment",
        "state": "paper",
        "gamma": 0.95,
        "actor_lr": 1e-4,
        "warmup_mixer": "odm",
        "zero_init_head": False,
        "reward_layers": [-1, -3, -5],
    },
    "mixlab": {
        "bound": 1.0,
        "kl_coef": 1.0,
        "reward": "loss",
        "state": "mixlab",
        "gamma": 0.0,
        "actor_lr": 1e-3,
        "warmup_mixer": "prior",
        "zero_init_head": True,
        "reward_layers": [-1],
    },
}


class AcodmOptions(Section):
    """Actor-critic online data mixing (arXiv 2505.23878), policy ``acodm``."""

    where: ClassVar[str] = "mixing.acodm"

    mode: str = Field(
        "auto",
        description="auto | online (train the actor-critic next to this LM) | proxy_train "
        "(same, and write the policy file mixing.policy_out, default <run>/policy.acodm.pt) "
        "| frozen (drive this LM with the actor of mixing.policy_in; no gradient capture, "
        "no agent updates). auto = frozen if mixing.policy_in is set, proxy_train if "
        "mixing.policy_out is set, else online. online/proxy_train with mixing.policy_in "
        "fine-tune the loaded actor (and critic) online.",
    )
    variant: str = Field(
        "mixlab",
        description="mixlab (bounded move around a prior, training-loss reward, loss-only "
        "state, contextual bandit: mixlab's own design) | paper (METHODS.md §2, arXiv "
        "2505.23878). Fields left null take the variant's value.",
    )
    preset: str | None = Field(
        None,
        description="null | acodm_release: set every release switch of §2.6 at once "
        "(implies variant=paper).",
    )
    preset_except: list[str] = Field(
        default_factory=list,
        description="Switch names the preset leaves at your value, e.g. [train_actor].",
    )
    hidden: Int = Field(128, description="Width H of actor and critic (128).")
    n_hidden: Int = Field(2, description="Hidden [Linear-LayerNorm-ReLU] blocks per network (2).")
    prior: str = Field(
        "uniform",
        description="The mixture the actor moves around: uniform | unimax (UniMax with "
        "mixing.max_epochs, else 4 epochs, over the run's budget) | natural | file (the "
        "JSON weights file prior_file). The epoch caps of mixing.max_epochs are applied to it "
        "first.",
    )
    prior_file: Str | None = Field(
        None,
        description='With prior: file, a JSON file {domain: weight} (or {"weights": {...}}) '
        "summing to 1 with every domain > 0, e.g. the headroom optimum w* that "
        "`scripts/mixture_headroom.py <uniform suite> --out w.json` writes: the actor then "
        "moves around that mixture instead of climbing to it from uniform.",
    )
    bound: Float | Literal["none"] | None = Field(
        None,
        description="Per-domain log-ratio bound: every |log(w_i / p0_i)| <= bound, as "
        "logits = log p0 + (bound/2) tanh(actor output) (e.g. 1.0: a uniform 1/8 moves within "
        "[0.046, 0.34]). none = unbounded (the paper's softmax). null = variant default "
        "(mixlab 1.0, paper none).",
    )
    kl_coef: Float | None = Field(
        None,
        description="lambda of the actor objective sum_i w_i Q_i - lambda KL(w || p0): the "
        "optimum is w ~ p0 exp(Q / lambda), never a vertex. null = variant default (mixlab 1.0, "
        "paper 0).",
    )
    reward: str | None = Field(
        None,
        description="heldout_alignment (each domain's training gradient projected on the "
        "gradient of a small held-out batch, DoGE-style, running-scale normalised) | alignment "
        "(the paper's train-gradient Gram, off-diagonal, z-scored per step) | loss (the "
        "domain's training loss of the step, ODM's reward, centred and running-scale "
        "normalised; no gradient capture) | progress (the domain's loss drop over the last "
        "doubling of its own tokens per unit of its cumulative share: the marginal gain of a "
        "token if its loss follows a power law; no gradient capture). "
        "null = variant default (mixlab loss, paper alignment).",
    )
    progress_loss: str = Field(
        "train",
        description="Which loss the progress estimate (reward: progress, state_gain, "
        "guard_worst) follows: train (each step's training loss; free) | heldout (the loss of "
        "heldout_windows fixed validation windows per domain that the evaluation does not "
        "score, one forward without gradients every heldout_every steps: what the mixture is "
        "for, when a corpus's training and held-out curves disagree). With heldout the guards "
        "rank domains by it too. A domain with no unscored validation text keeps its training "
        "loss (a warning names it) (train).",
    )
    heldout_every: Int | None = Field(
        None,
        description="heldout_alignment: one extra small backward on validation windows every "
        "k LM steps (the held-out gradient between two captures is the last one); "
        "progress_loss: heldout: one forward every k steps. null = 10 for heldout_alignment, "
        "40 for progress_loss: heldout.",
    )
    heldout_windows: Int | None = Field(
        None,
        description="heldout_alignment: validation windows per domain in that backward, walking "
        "back from the end of each domain's validation split, other windows each time; "
        "progress_loss: heldout: the same windows every time, spread evenly over the "
        "unscored text (fewer than ~8 do not stand for a domain). null = 1 for "
        "heldout_alignment, 8 for progress_loss: heldout.",
    )
    reward_ema: Float = Field(
        0.98,
        description="heldout_alignment: EMA factor of the running reward scale (the reward is "
        "centred and divided by sqrt(EMA of its spread over domains), not z-scored) (0.98).",
    )
    state: str | None = Field(
        None,
        description="mixlab (EMA loss, loss trend, log cumulative share / p0, progress: "
        "3K + 1, +K with state_gain; the same meaning at every model size) | paper (§2.3: "
        "loss, loss change, counts, weight norms, norm change, progress: 3K + 2D + 1). "
        "null = variant default.",
    )
    state_ema: Float = Field(
        0.1, description="state=mixlab: EMA rate of the per-domain loss (the trend uses /5) (0.1)."
    )
    state_gain: bool = Field(
        False,
        description="state=mixlab: add K features, clip3(z(each domain's loss drop over the last "
        "doubling of its tokens per unit of its share)): the progress reward's estimate, so the "
        "actor (and a frozen one on a target) sees the marginal gain of a token (4K + 1). A "
        "frozen target must set it as its proxy did (false).",
    )
    gamma: Float | None = Field(
        None,
        description="Discount factor in [0, 1); 0 = contextual bandit (the critic fits the "
        "reward itself). null = variant default (mixlab 0, paper 0.95).",
    )
    horizon: Int = Field(
        1,
        description="n-step returns: the critic's target sums the next n rewards "
        "sum_k gamma^k r_{t+k} (+ gamma^n Q-(s_{t+n}) with bootstrap) (1).",
    )
    bootstrap: bool = Field(
        True,
        description="Add the target networks' gamma^n Q-(s', pi-(s')) to the critic target "
        "(DDPG); false = a pure short-horizon return.",
    )
    warmup_mixer: str | None = Field(
        None,
        description="Mixture during warm-up: prior (p0) | odm (ODM smoothed_mean, with actor "
        "behaviour cloning; the paper). null = variant default.",
    )
    zero_init_head: bool | None = Field(
        None,
        description="Start the actor's last layer at zero, so it outputs p0 exactly until "
        "trained. null = variant default (mixlab true, paper false).",
    )
    tau: Float = Field(0.005, description="Soft target update rate in (0, 1] (0.005).")
    buffer_size: Int = Field(10_000, description="Replay capacity C in transitions, FIFO (10000).")
    batch_size: Int = Field(32, description="Replay minibatch N, drawn without replacement (32).")
    updates_per_step: Int = Field(1, description="DDPG updates per agent update (1).")
    agent_update_every: Int = Field(
        1, description="Run the agent updates only every k LM steps (cost knob; 1)."
    )
    agent_threads: Int = Field(
        1,
        description="torch intra-op threads while the agent computes (its matrices are tiny, "
        "so thread sync costs more than it saves); restored afterwards; 0 = torch's.",
    )
    actor_lr: Float | None = Field(
        None,
        description="Actor AdamW learning rate; null = variant default (mixlab 1e-3, paper 1e-4).",
    )
    critic_lr: Float = Field(1e-3, description="Critic AdamW learning rate (1e-3).")
    weight_decay: Float = Field(0.0, description="AdamW weight decay of both networks (0).")
    grad_clip: Float = Field(1.0, description="Max grad norm per network update; 0 disables (1.0).")
    lr_schedule: str = Field(
        "constant",
        description="constant | warmup_cosine (linear warm-up over T_w, cosine to "
        "min_lr_ratio*lr at T; the release schedule). Default constant.",
    )
    min_lr_ratio: Float = Field(0.1, description="Final lr / peak lr of warmup_cosine (0.1).")
    warmup_steps: Float = Field(
        -1,
        description="LM steps T_w on the warm-up mixer while replay fills: whole steps, or a "
        "fraction of the run's steps T in (0, 1) (0.3 = the first 30%; arms that warm up "
        "alike on the same prior start alike: configs/suites/acodm_shared_start.yaml); "
        "-1 = max(2N, floor(0.05 T)).",
    )
    warmup_alpha: Float = Field(0.5, description="EMA factor of the ODM warm-up mixer (0.5).")
    exploration: str = Field(
        "logit_gaussian",
        description="Noise on the actor's mixture in the training modes: logit_gaussian "
        "(N(0, sigma^2) on log w) | release (subtract U(0, 1e-3)) | none.",
    )
    frozen_exploration: str = Field("none", description="Exploration in mode=frozen (none).")
    sigma: Float = Field(0.1, description="Std of the logit_gaussian noise, in nats (0.1).")
    depth_points: list[Float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
        description="Relative depths q in [0, 1] of the tracked MLP down-projections; block "
        "b = floor(q (L-1) + 0.5). D = len. Default [0, .25, .5, .75, 1].",
    )
    reward_layers: list[Int] | None = Field(
        None,
        description="Blocks whose MLP down-projection gradients form the reward; negative = "
        "from the end, out-of-range dropped. null = variant default (paper [-1, -3, -5]; "
        "mixlab [-1]: the held-out pass then backpropagates through the last block only).",
    )
    reward_role: str = Field(
        "mlp_down",
        description="Which weight matrix of each reward block gives the gradients: mlp_down "
        "(MLP down-projection, the paper) | attn_out (attention output projection).",
    )
    reward_weighting: str = Field(
        "uniform", description="uniform (sum_j A_ij, release) | mixture (sum_j w_j A_ij)."
    )
    critic_output: str = Field("vector", description="vector (one Q per domain) | scalar.")
    train_actor: bool = Field(True, description="Step the actor optimiser (release: false).")
    actor_objective: str = Field(
        "weighted", description="weighted (-sum_i a_i Q_i) | mean (-mean_i Q_i, release)."
    )
    critic_grad_leak: bool = Field(
        False, description="Let the actor loss step the critic, ascent on Q (release: true)."
    )
    warmup_critic_target: str = Field(
        "td", description="Warm-up critic target: td | r_plus_gamma_r (release)."
    )
    delta_reference: str = Field(
        "previous",
        description="Loss / weight-norm change against: previous step | first (release).",
    )
    progress_scale: Float = Field(
        1.0, description="Progress feature = progress_scale * t/T (release 100)."
    )
    pre_clip: Float | None = Field(
        None, description="Clamp the raw reward to [-c, c] before z (release 999); null = off."
    )
    floor_per_domain: Int = Field(
        1, description="Micro-batches (sequences) per domain forced every step; 0 = off."
    )
    guard_hardest: Int = Field(
        0,
        description="Worst-domain guard: the k domains with the highest training loss (the "
        "state's slow loss EMA) are never sampled below their prior share; the mass they need "
        "is taken from the others in proportion to their weights. For a reward that maximises "
        "the mean (progress), so the hardest domain is not traded away. Needs state: mixlab; "
        "0 = off (0).",
    )
    guard_worst: bool = Field(
        False,
        description="Worst-loss guard (mixing.own_tokens.worst_floors, online): no domain is "
        "sampled below the share at which its predicted loss (EMA training loss, minus its "
        "drop per doubling of its own tokens times log2 of its share over the prior's) would "
        "pass the hardest domain's; the hardest keeps its prior share. The estimate is "
        "reward: progress's (kept in frozen mode too). Off (false).",
    )


# The §2.6 table: field -> release value.
RELEASE_SWITCHES: dict[str, Any] = {
    "train_actor": False,
    "actor_objective": "mean",
    "critic_grad_leak": True,
    "warmup_critic_target": "r_plus_gamma_r",
    "delta_reference": "first",
    "progress_scale": 100.0,
    "pre_clip": 999.0,
    "floor_per_domain": 1,
    "exploration": "release",
    "lr_schedule": "warmup_cosine",
    "actor_lr": 0.01,
    "critic_lr": 0.01,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.1,
}


def apply_release_preset(opts: AcodmOptions) -> AcodmOptions:
    """A copy of ``opts`` with every release switch set, except those in ``preset_except``.

    The release also steps the critic's lr scheduler twice per update; that is not reproduced.
    """
    keep = set(opts.preset_except)
    changes = {k: v for k, v in RELEASE_SWITCHES.items() if k not in keep}
    return opts.model_copy(update={"variant": "paper", **changes})


def with_variant_defaults(opts: AcodmOptions) -> AcodmOptions:
    """A copy of ``opts`` whose null fields hold the value of ``opts.variant``."""
    if opts.variant not in VARIANT_DEFAULTS:
        raise _err("variant", f"choose one of {', '.join(VARIANTS)}", opts.variant)
    fill = {
        k: list(v) if isinstance(v, list) else v
        for k, v in VARIANT_DEFAULTS[opts.variant].items()
        if getattr(opts, k) is None
    }
    return opts.model_copy(update=fill) if fill else opts


def is_bounded(opts: AcodmOptions) -> bool:
    """True when the actor moves within a log-ratio bound around the prior."""
    return opts.bound is not None and opts.bound != UNBOUNDED


def resolve_warmup_steps(warmup_steps: float, batch_size: int, total_steps: int) -> int:
    """T_w in LM steps: -1 means max(2N, floor(0.05 T)), a fraction f in (0, 1) round(f T),
    whole steps are used as given."""
    if warmup_steps == -1:
        return max(2 * batch_size, int(0.05 * total_steps))
    if 0 < warmup_steps < 1:
        return round(warmup_steps * total_steps)
    return int(warmup_steps)


def _err(name: str, msg: str, value: Any) -> ConfigError:
    return ConfigError(f"mixing.acodm.{name}: {msg}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(opts: AcodmOptions, num_domains: int) -> None:
    """Check every field; raise ConfigError naming ``mixing.acodm.<field>`` and the range."""
    if num_domains < 2:
        raise ConfigError(
            f"mixing.name=acodm needs at least 2 domains (the reward compares domains); "
            f"the store has {num_domains}"
        )
    opts = with_variant_defaults(opts)
    choices = {
        "mode": MODES,
        "variant": VARIANTS,
        "prior": PRIORS,
        "reward": REWARDS,
        "progress_loss": PROGRESS_LOSSES,
        "state": STATES,
        "warmup_mixer": WARMUP_MIXERS,
        "exploration": EXPLORATIONS,
        "frozen_exploration": EXPLORATIONS,
        "reward_weighting": REWARD_WEIGHTINGS,
        "critic_output": CRITIC_OUTPUTS,
        "actor_objective": ACTOR_OBJECTIVES,
        "warmup_critic_target": WARMUP_CRITIC_TARGETS,
        "delta_reference": DELTA_REFERENCES,
        "lr_schedule": LR_SCHEDULES,
        "reward_role": ROLES,
    }
    for name, allowed in choices.items():
        value = getattr(opts, name)
        if value not in allowed:
            raise _err(name, f"choose one of {', '.join(allowed)}", value)
    if opts.preset is not None and opts.preset not in PRESETS:
        raise _err("preset", f"choose null or one of {', '.join(PRESETS)}", opts.preset)
    if not isinstance(opts.preset_except, list) or any(
        p not in RELEASE_SWITCHES for p in opts.preset_except
    ):
        raise _err(
            "preset_except",
            f"must be a list of switch names out of {', '.join(RELEASE_SWITCHES)}",
            opts.preset_except,
        )
    minimums = {
        "hidden": 1,
        "n_hidden": 1,
        "buffer_size": 1,
        "batch_size": 1,
        "updates_per_step": 1,
        "agent_update_every": 1,
        "agent_threads": 0,
        "floor_per_domain": 0,
        "guard_hardest": 0,
        "horizon": 1,
        "heldout_every": 1,
        "heldout_windows": 1,
    }
    for name, low in minimums.items():
        value = getattr(opts, name)
        if value is None and name in ("heldout_every", "heldout_windows"):
            continue  # null: the probe's user decides (heldout_probe)
        if not (_is_int(value) and value >= low):
            raise _err(name, f"must be an integer >= {low}", value)
    tw = opts.warmup_steps
    if not (_is_num(tw) and (tw == -1 or 0 < tw < 1 or (tw >= 0 and float(tw).is_integer()))):
        raise _err("warmup_steps", "must be -1, a fraction in (0, 1) or whole steps >= 0", tw)
    if (opts.prior == "file") != (opts.prior_file is not None):
        raise ConfigError(
            "mixing.acodm.prior_file goes with mixing.acodm.prior: file (a JSON weights file "
            f"to move around); got prior={opts.prior!r}, prior_file={opts.prior_file!r}: set "
            "both or neither"
        )
    if opts.guard_hardest >= num_domains:
        raise _err(
            "guard_hardest", f"must be < the number of domains ({num_domains})", opts.guard_hardest
        )
    if opts.guard_hardest and opts.state != "mixlab":
        raise _err(
            "guard_hardest",
            "needs state: mixlab (its loss EMA ranks the domains)",
            opts.guard_hardest,
        )
    if opts.state_gain and opts.state != "mixlab":
        raise _err("state_gain", "needs state: mixlab", opts.state_gain)
    if opts.progress_loss == "heldout" and not uses_progress(opts):
        raise _err(
            "progress_loss",
            "heldout is for the progress estimate, which this run does not use (set reward: "
            "progress, state_gain: true or guard_worst: true)",
            opts.progress_loss,
        )
    if opts.progress_loss == "heldout" and opts.reward == "heldout_alignment":
        raise _err(
            "progress_loss",
            "heldout cannot share the held-out batch of reward: heldout_alignment (that one "
            "walks through the validation text, the progress estimate needs fixed windows)",
            opts.progress_loss,
        )
    if opts.batch_size > opts.buffer_size:
        raise _err("batch_size", f"must be <= buffer_size ({opts.buffer_size})", opts.batch_size)
    ranges = {  # name -> (low, high, low inclusive, high inclusive)
        "gamma": (0.0, 1.0, True, False),
        "tau": (0.0, 1.0, False, True),
        "actor_lr": (0.0, math.inf, False, False),
        "critic_lr": (0.0, math.inf, False, False),
        "weight_decay": (0.0, math.inf, True, False),
        "grad_clip": (0.0, math.inf, True, False),
        "min_lr_ratio": (0.0, 1.0, True, True),
        "warmup_alpha": (0.0, 1.0, True, False),
        "sigma": (0.0, math.inf, True, False),
        "progress_scale": (0.0, math.inf, True, False),
        "kl_coef": (0.0, math.inf, True, False),
        "reward_ema": (0.0, 1.0, True, False),
        "state_ema": (0.0, 1.0, False, True),
    }
    for name, (lo, hi, lo_in, hi_in) in ranges.items():
        v = getattr(opts, name)
        ok = _is_num(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not ok:
            interval = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
            raise _err(name, f"must be a number in {interval}", v)
    if is_bounded(opts) and not (_is_num(opts.bound) and opts.bound > 0):  # type: ignore[operator]
        raise _err("bound", "must be null, none or a number > 0", opts.bound)
    if opts.pre_clip is not None and not (_is_num(opts.pre_clip) and opts.pre_clip > 0):
        raise _err("pre_clip", "must be null or a number > 0", opts.pre_clip)
    points = opts.depth_points
    if not (
        isinstance(points, (list, tuple))
        and points
        and all(_is_num(q) and 0 <= q <= 1 for q in points)
    ):
        raise _err("depth_points", "must be a non-empty list of numbers in [0, 1]", points)
    layers = opts.reward_layers
    if not (isinstance(layers, (list, tuple)) and layers and all(_is_int(b) for b in layers)):
        raise _err("reward_layers", "must be a non-empty list of block indices", layers)


# heldout_every, heldout_windows when null: for the reward's walking backward pass, and for
# the progress estimate's fixed windows (measured: 4 windows missed the evaluation's drops per
# doubling by up to 0.2 nats, 16 every 80 steps matched within 0.05 on most domains).
HELDOUT_PROBE_DEFAULTS: dict[str, dict[str, int]] = {
    "heldout_alignment": {"heldout_every": 10, "heldout_windows": 1},
    "progress_loss": {"heldout_every": 40, "heldout_windows": 8},
}


def heldout_probe(opts: AcodmOptions, user: str) -> tuple[int, int]:
    """(every, windows per domain) of the held-out probe for ``user`` (a key of
    :data:`HELDOUT_PROBE_DEFAULTS`): the options, or that user's defaults where null."""
    defaults = HELDOUT_PROBE_DEFAULTS[user]
    every = defaults["heldout_every"] if opts.heldout_every is None else opts.heldout_every
    windows = defaults["heldout_windows"] if opts.heldout_windows is None else opts.heldout_windows
    return int(every), int(windows)


def uses_progress(opts: AcodmOptions) -> bool:
    """True when the run keeps the progress estimate (reward: progress, state_gain or
    guard_worst)."""
    return opts.reward == "progress" or bool(opts.state_gain) or bool(opts.guard_worst)


def resolve_mode(mode: str, policy_in: str | None, policy_out: str | None) -> str:
    """The concrete mode (online | proxy_train | frozen) for ``mode`` and the policy paths."""
    if mode not in MODES:
        raise _err("mode", f"choose one of {', '.join(MODES)}", mode)
    if mode == "frozen" and not policy_in:
        raise ConfigError(
            "mixing.acodm.mode=frozen needs mixing.policy_in: the *.acodm.pt file a proxy run "
            "wrote (mixing.policy_out)"
        )
    if mode == "auto":
        return "frozen" if policy_in else ("proxy_train" if policy_out else "online")
    if mode == "online" and policy_out:
        return "proxy_train"  # online, and the file is wanted: that is proxy_train
    return mode


def resolve_options(
    opts: AcodmOptions,
    num_domains: int,
    policy_in: str | None = None,
    policy_out: str | None = None,
) -> AcodmOptions:
    """Validate, resolve the mode, the preset and the variant defaults; a copy with typed lists."""
    validate(opts, num_domains)
    opts = opts.model_copy(update={"mode": resolve_mode(opts.mode, policy_in, policy_out)})
    if opts.preset == "acodm_release":
        opts = apply_release_preset(opts)
    opts = with_variant_defaults(opts)
    validate(opts, num_domains)
    return opts.model_copy(
        update={
            "depth_points": [float(q) for q in opts.depth_points],
            "reward_layers": [int(b) for b in opts.reward_layers],  # type: ignore[union-attr]
            "preset_except": list(opts.preset_except),
        }
    )
