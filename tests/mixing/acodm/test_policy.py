"""AcodmPolicy (METHODS.md §2): registry and loop-facing attributes, ODM warm-up then the actor,
transitions, frozen mode, release preset, update cadences, absent domains, option validation,
and the mid-main-phase checkpoint round trip (next 20 mixtures bit-identical)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mixlab.errors import ConfigError, DataError, ResumeError
from mixlab.mixing.acodm import (
    RELEASE_SWITCHES,
    AcodmOptions,
    AcodmPolicy,
    alignment_reward,
    build_actor,
    load_policy_file,
    resolve_options,
    state_spec,
)
from mixlab.mixing.base import (
    Feedback,
    MixingPolicy,
    PolicyContext,
    available_policies,
    validate_weights,
)
from mixlab.mixing.odm import OdmPolicy
from mixlab.mixing.own_tokens import worst_floors
from tests.helpers import build

DOMAINS = ("a", "b", "c")
TOKENS = np.array([1, 2, 3])
K, D, T = 3, 3, 60
SMALL = {
    "variant": "paper",
    "hidden": 16,
    "batch_size": 8,
    "buffer_size": 200,
    "depth_points": [0, 0.5, 1],
}


def make(
    seed: int = 0, update_every: int = 1, domains: tuple[str, ...] = DOMAINS, **kw: Any
) -> AcodmPolicy:
    paths = {key: kw.pop(key, None) for key in ("policy_in", "policy_out")}
    opts = AcodmOptions(**{**SMALL, **kw})
    ctx = PolicyContext(domains, TOKENS[: len(domains)], seed, T)
    policy = build("acodm", ctx, update_every=update_every, acodm=opts, **paths)
    assert isinstance(policy, AcodmPolicy)
    return policy


def feedback(t: int, rng: np.random.Generator, absent: tuple[int, ...] = (), grads: bool = True):
    tok = rng.integers(50, 100, size=K)
    tok[list(absent)] = 0
    mb = (tok > 0) * rng.integers(1, 3, size=K)
    grad = rng.normal(size=(K, 40)) * mb[:, None] if grads else None
    return Feedback(
        t,
        T,
        rng.uniform(2, 4, size=K) * tok,
        tok,
        mb,
        grad_sum=grad,
        param_norms=rng.uniform(1, 2, size=D),
        extras={"param_diff_norms": rng.uniform(0, 0.1, size=D)},
    )


def run(policy: AcodmPolicy, steps: range, seed: int = 0, **kw: Any) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for t in steps:
        policy.update(feedback(t, rng, **kw))
        out.append(validate_weights(policy.weights(), policy.domains))
    return out


def test_registered_and_loop_facing_attributes() -> None:
    assert "acodm" in available_policies()
    policy = make()
    assert isinstance(policy, MixingPolicy)
    needs = policy.needs
    assert needs.gradients is not None and needs.floor_per_domain == 1
    assert needs.gradients.blocks == (-1, -3, -5) and needs.gradients.role == "mlp_down"
    assert needs.weight_norms is not None
    assert needs.weight_norms.depth_points == (0.0, 0.5, 1.0)
    assert not needs.exports_policy_file
    exporting = make(policy_out="p.acodm.pt").needs
    assert exporting.exports_policy_file and exporting.policy_file == "p.acodm.pt"
    assert policy.warmup_steps == 16  # max(2N, 5% of 60)
    np.testing.assert_allclose(policy.weights(), TOKENS / TOKENS.sum())
    assert policy.phase == "warmup" and policy.last_state is None


def test_warmup_steps_as_a_fraction_of_the_run() -> None:
    assert make(warmup_steps=0.25).warmup_steps == round(0.25 * T)
    assert make(warmup_steps=7).warmup_steps == 7
    assert make(warmup_steps=0).warmup_steps == 0


def test_warmup_is_odm_smoothed_then_the_actor_takes_over() -> None:
    policy = make(exploration="none")
    odm = OdmPolicy(DOMAINS, TOKENS / TOKENS.sum(), rule="smoothed_mean", alpha=0.5)
    rng = np.random.default_rng(0)
    tw = policy.warmup_steps
    for t in range(1, tw + 1):
        fb = feedback(t, rng)
        policy.update(fb)
        odm.update(fb)
        assert len(policy.agent.buffer) == t
        if t < tw:
            assert np.array_equal(policy.weights(), odm.weights())
    assert policy.agent.updates == tw - policy.opts.batch_size + 1  # from a full minibatch on
    state = policy.last_state
    assert state is not None
    assert np.array_equal(policy.weights(), policy.agent.act(state, "none"))
    assert policy.phase == "main" and policy.log_values()["acodm/phase"] == 1.0
    actor = [p.detach().clone() for p in policy.agent.actor.parameters()]
    target = list(policy.agent.actor_target.parameters())
    assert all(torch.equal(a, b) for a, b in zip(actor, target, strict=True))  # hard copy


def test_transitions_pushed() -> None:
    policy = make()
    rng = np.random.default_rng(0)
    fbs = [feedback(t, rng) for t in (1, 2)]
    first_action = policy.weights()
    for fb in fbs:
        policy.update(fb)
    buf = policy.agent.buffer.state_dict()
    assert torch.equal(buf["s"][0], buf["s2"][0])  # s_0 := s_1
    assert torch.equal(buf["s"][1], buf["s2"][0])
    np.testing.assert_allclose(buf["a"][0].numpy(), first_action, rtol=1e-6)
    mean_grad = fbs[1].grad_sum / fbs[1].microbatch_count[:, None]
    reward, _ = alignment_reward(mean_grad, np.ones(K, dtype=bool))
    np.testing.assert_allclose(buf["r"][1].numpy(), reward, rtol=1e-6)
    logs = policy.log_values()
    assert logs["acodm/reward/b"] == pytest.approx(reward[1])


def test_weights_valid_and_logs_complete() -> None:
    policy = make()
    run(policy, range(1, 31))
    logs = policy.log_values()
    for key in ("critic_loss", "actor_loss", "bc_loss", "mean_q", "buffer_size", "phase"):
        assert f"acodm/{key}" in logs
    for d in DOMAINS:
        assert f"acodm/reward/{d}" in logs and f"acodm/grad_norm/{d}" in logs
    assert all(np.isfinite(v) for v in logs.values())
    assert logs["acodm/actor_drift"] > 0 and logs["acodm/buffer_size"] == 30


def test_same_seed_same_trajectory() -> None:
    a, b, c = make(seed=1), make(seed=1), make(seed=2)
    wa, wb, wc = (run(p, range(1, 26)) for p in (a, b, c))
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))
    assert not np.array_equal(wa[-1], wc[-1])


@pytest.mark.parametrize("saved_at", [10, 25])  # mid warm-up (ODM state) and mid main phase
def test_state_dict_round_trip(saved_at: int) -> None:
    a = make()
    rng = np.random.default_rng(0)
    for t in range(1, saved_at + 1):
        a.update(feedback(t, rng))
    assert a.phase == ("main" if saved_at > 16 else "warmup") and a.agent.updates > 0
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as the checkpoint does
    buf.seek(0)
    b = make(seed=123)  # another seed: everything must come from the state
    b.load_state_dict(torch.load(buf, weights_only=False))
    assert np.array_equal(a.weights(), b.weights())
    for t in range(saved_at + 1, saved_at + 21):
        fb = feedback(t, rng)
        a.update(fb)
        b.update(fb)
        assert np.array_equal(a.weights(), b.weights())
    assert a.log_values() == b.log_values()


def test_resume_with_other_domains_or_mode_fails() -> None:
    state = make().state_dict()
    with pytest.raises(ResumeError, match="domains"):
        make(domains=("a", "b")).load_state_dict(state)
    with pytest.raises(ResumeError, match=r"hidden|network"):
        make(hidden=8).load_state_dict(state)


def test_frozen_mode_drives_with_the_file_actor(tmp_path: Path) -> None:
    proxy = make(mode="proxy_train")
    run(proxy, range(1, 31))
    path = proxy.save_policy_file(tmp_path / "p.acodm.pt", {"seed": 0})
    frozen = make(mode="frozen", policy_in=str(path), hidden=128, n_hidden=3)
    assert frozen.needs.gradients is None
    before = [p.detach().clone() for p in frozen.agent.actor.parameters()]
    pf = load_policy_file(path, DOMAINS, state_spec(frozen.opts, K))
    actor = build_actor(pf)
    rng = np.random.default_rng(1)
    for t in range(1, 41):
        frozen.update(feedback(t, rng, grads=False))
        if t >= frozen.warmup_steps:
            with torch.no_grad():
                s = torch.as_tensor(frozen.last_state, dtype=torch.float32)
                np.testing.assert_allclose(frozen.weights(), actor(s).numpy(), atol=1e-6)
    after = list(frozen.agent.actor.parameters())
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))
    assert len(frozen.agent.buffer) == 0 and frozen.agent.updates == 0
    assert frozen.log_values()["acodm/actor_drift"] == 0.0


def test_release_preset_leaves_the_actor_at_init() -> None:
    policy = make(preset="acodm_release")
    for name, value in RELEASE_SWITCHES.items():
        assert getattr(policy.opts, name) == value
    run(policy, range(1, 31))
    logs = policy.log_values()
    assert logs["acodm/actor_drift"] == 0.0 and logs["acodm/critic_drift"] > 0
    kept = make(preset="acodm_release", preset_except=["train_actor"])
    assert kept.opts.train_actor and kept.opts.actor_objective == "mean"
    run(kept, range(1, 31))
    assert kept.log_values()["acodm/actor_drift"] > 0


def test_warmup_cosine_lr() -> None:
    policy = make(lr_schedule="warmup_cosine", min_lr_ratio=0.1)
    run(policy, range(1, 9))  # first agent update at t = 8 = N; T_w = 16
    assert policy.agent.critic_opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 8 / 16)
    run(policy, range(9, T + 1))
    assert policy.agent.actor_opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.1)


def test_update_cadences() -> None:
    policy = make(update_every=2, agent_update_every=3)
    rng = np.random.default_rng(0)
    for t in range(1, 41):
        before, updates = policy.weights(), policy.agent.updates
        policy.update(feedback(t, rng))
        if t % 2:
            assert np.array_equal(before, policy.weights())
        grew = policy.agent.updates > updates
        assert grew == (t % 3 == 0 and t >= 8)


def test_absent_domain_gets_zero_reward_and_mask() -> None:
    policy = make(floor_per_domain=0)
    rng = np.random.default_rng(0)
    for t in range(1, 21):
        policy.update(feedback(t, rng, absent=(1,) if t % 2 else ()))
    buf = policy.agent.buffer.state_dict()
    assert buf["mask"][-2].tolist() == [1.0, 0.0, 1.0]  # step 19
    assert buf["r"][-2][1].item() == 0.0 and buf["mask"][-1].tolist() == [1.0, 1.0, 1.0]


def test_non_finite_gradients_make_a_domain_absent() -> None:
    policy = make()
    rng = np.random.default_rng(0)
    fb = feedback(1, rng)
    assert fb.grad_sum is not None
    fb.grad_sum[2, 5] = np.nan
    policy.update(fb)
    buf = policy.agent.buffer.state_dict()
    assert buf["mask"][0].tolist() == [1.0, 1.0, 0.0] and buf["r"][0][2].item() == 0.0
    cos = policy.gradient_cosines()
    assert cos is not None and np.all(np.isfinite(cos)) and cos[2, 2] == 0.0
    assert cos[0, 0] == pytest.approx(1.0)


def test_missing_feedback_inputs_raise() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="grad_sum"):
        make().update(feedback(1, rng, grads=False))
    fb = feedback(1, rng)
    bare = Feedback(1, T, fb.loss_sum, fb.token_count, fb.microbatch_count, grad_sum=fb.grad_sum)
    with pytest.raises(ValueError, match="param_diff_norms"):
        make().update(bare)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "offline"),
        ("gamma", 1.0),
        ("tau", 0.0),
        ("hidden", 0),
        ("batch_size", 500),
        ("actor_lr", -1.0),
        ("exploration", "ou"),
        ("depth_points", [0.0, 1.5]),
        ("depth_points", []),
        ("reward_layers", [1.5]),
        ("pre_clip", 0.0),
        ("warmup_steps", -2),
        ("warmup_steps", 1.5),
        ("warmup_steps", -0.5),
        ("preset", "paper"),
        ("preset_except", ["hidden"]),
        ("critic_output", "matrix"),
        ("variant", "dqn"),
        ("prior", "zipf"),
        ("reward", "perplexity"),
        ("bound", 0.0),
        ("horizon", 0),
        ("kl_coef", -1.0),
        ("heldout_every", 0),
        ("state", "both"),
        ("guard_hardest", -1),
        ("guard_hardest", 3),
        ("progress_loss", "eval"),
        ("progress_loss", "heldout"),  # the paper variant keeps no progress estimate
    ],
)
def test_bad_options_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"mixing.acodm.{field}"):
        make(**{field: value})


def test_option_resolution() -> None:
    with pytest.raises(ConfigError, match=r"mixing\.policy_in"):
        make(mode="frozen")
    with pytest.raises(ConfigError, match="at least 2 domains"):
        resolve_options(AcodmOptions(), 1)
    resolved = resolve_options(AcodmOptions(depth_points=[0, 1], reward_layers=[-1]), 3)
    assert resolved.depth_points == [0.0, 1.0] and isinstance(resolved.depth_points[0], float)
    default = make()  # no mixing.acodm section at all
    ctx = PolicyContext(DOMAINS, TOKENS, 0, T)
    bare = build("acodm", ctx)
    assert isinstance(bare, AcodmPolicy) and bare.opts.hidden == 128
    assert default.opts.hidden == 16


def test_non_finite_feedback_never_enters_replay_or_the_networks() -> None:
    """One NaN used to poison the buffer, then the actor, then silently give uniform weights."""
    policy = make()
    rng = np.random.default_rng(0)
    tw = policy.warmup_steps
    run(policy, range(1, tw + 5))
    size = len(policy.agent.buffer)
    weights = policy.weights()
    policy.update(dataclasses.replace(feedback(tw + 5, rng), param_norms=np.full(D, np.nan)))
    assert np.array_equal(policy.weights(), weights)  # no action on a non-finite state
    assert len(policy.agent.buffer) == size  # and no transition stored
    assert policy.log_values()["acodm/skipped_nonfinite"] == 1
    # Non-finite gradients mark their domains absent: the stored reward stays finite.
    policy.update(dataclasses.replace(feedback(tw + 6, rng), grad_sum=np.full((K, 40), np.inf)))
    stored = policy.agent.buffer.state_dict()
    for key in ("s", "a", "r", "s2"):
        assert torch.isfinite(stored[key]).all(), key
    later = run(policy, range(tw + 7, tw + 40))
    assert len(policy.agent.buffer) > size
    actor = torch.cat([p.detach().flatten() for p in policy.agent.actor.parameters()])
    assert torch.isfinite(actor).all() and policy.agent.drift()[0] > 0
    assert not np.allclose(later[-1], np.full(K, 1 / K))  # still learning, not uniform


# ---------------------------------------------------------------------------- mixlab variant
# the gradient-reward paths (the variant's default reward is loss: see the test below)
MIXLAB = {
    "variant": "mixlab",
    "reward": "heldout_alignment",
    "hidden": 16,
    "batch_size": 8,
    "buffer_size": 200,
}


def make_mixlab(ctx: PolicyContext | None = None, **kw: Any) -> AcodmPolicy:
    mixing = {key: kw.pop(key) for key in ("policy_in", "policy_out", "max_epochs") if key in kw}
    opts = AcodmOptions(**{**MIXLAB, **kw})
    policy = build("acodm", ctx or PolicyContext(DOMAINS, TOKENS, 0, T), acodm=opts, **mixing)
    assert isinstance(policy, AcodmPolicy)
    return policy


def mixlab_feedback(t: int, rng: np.random.Generator, favour: int | None = None) -> Feedback:
    """Training gradients (K, 40); every 10 steps from t = 1 a held-out batch. ``favour``: that
    domain's training gradient points along the held-out one (an adversarial constant reward)."""
    tok = rng.integers(50, 100, size=K).astype(float)
    h_dir = np.ones(40)
    grads = rng.normal(size=(K, 40))
    if favour is not None:
        grads[favour] += 3.0 * h_dir
    extras: dict[str, Any] = {"grad_count": np.ones(K)}
    if (t - 1) % 10 == 0:
        extras.update(
            heldout_grad_sum=np.tile(h_dir, (K, 1)) * 5.0,
            heldout_grad_count=np.full(K, 5.0),
            heldout_loss=rng.uniform(3, 4, size=K),
        )
    return Feedback(
        t, T, rng.uniform(2, 4, size=K) * tok, tok, np.ones(K), grad_sum=grads, extras=extras
    )


def test_mixlab_needs_and_warmup_at_the_prior() -> None:
    policy = make_mixlab()
    needs = policy.needs
    assert needs.gradients is not None and needs.weight_norms is None
    assert needs.heldout_gradients is not None
    assert (needs.heldout_gradients.every, needs.heldout_gradients.windows_per_domain) == (10, 1)
    assert needs.heldout_gradients.due(1) and needs.heldout_gradients.due(11)
    assert policy.opts.gamma == 0.0 and policy.opts.bound == 1.0 and policy.opts.state == "mixlab"
    np.testing.assert_allclose(policy.weights(), np.full(K, 1 / K))
    rng = np.random.default_rng(0)
    for t in range(1, policy.warmup_steps):
        policy.update(mixlab_feedback(t, rng))
        np.testing.assert_allclose(policy.weights(), np.full(K, 1 / K))
    logs = policy.log_values()
    assert logs["acodm/kl"] == pytest.approx(0.0, abs=1e-12) and logs["acodm/bound"] == 1.0
    assert "acodm/bc_loss" not in logs and logs["acodm/actor_drift"] == 0.0  # no cloning
    assert np.isfinite(logs["acodm/heldout_loss/a"]) and logs["acodm/reward_scale"] > 0


def test_mixlab_adversarial_reward_stays_within_the_bound() -> None:
    """Domain c's training gradient always points along the held-out gradient (the best reward
    every step): the actor favours c, but never beyond the bound, for 300 steps."""
    policy = make_mixlab(bound=0.7, actor_lr=1e-2)
    rng = np.random.default_rng(0)
    ratios, weights = [], []
    for t in range(1, 301):
        policy.update(mixlab_feedback(t, rng, favour=2))
        w = policy.weights()
        weights.append(w)
        ratios.append(np.abs(np.log(w * K)).max())
        assert policy.log_values()["acodm/bound_excess"] == 0.0
    assert max(ratios) <= 0.7 + 1e-9
    assert np.mean([w[2] for w in weights[-50:]]) > 1 / K + 0.05  # it learned to favour c
    assert policy.log_values()["acodm/reward/c"] > 0


def test_loss_reward_needs_no_capture_and_favours_the_high_loss_domain() -> None:
    """reward: loss (the mixlab default) learns from per-domain losses alone (no gradients,
    no held-out batch)."""
    policy = make_mixlab(reward=None, actor_lr=1e-2)
    assert policy.opts.reward == "loss"
    needs = policy.needs
    assert needs.gradients is None and needs.heldout_gradients is None
    assert not needs.looks_inside_model and needs.floor_per_domain == 1
    rng = np.random.default_rng(0)
    for t in range(1, 301):
        tok = np.full(K, 64.0)
        loss = rng.normal(3.0, 0.05, size=K)
        loss[1] += 0.5  # domain b is always the hardest
        policy.update(Feedback(t, T, loss * tok, tok, np.ones(K)))
    logs = policy.log_values()
    assert logs["acodm/reward/b"] > 0 > logs["acodm/reward/a"]
    assert policy.weights()[1] == max(policy.weights()) > 1 / K
    assert np.abs(np.log(policy.weights() * K)).max() <= policy.opts.bound + 1e-9


def test_progress_reward_favours_the_domain_still_learning_not_the_hardest() -> None:
    """reward: progress ranks by loss decrease per token, not by loss level: domain b is the
    hardest but has stopped improving, domain c the easiest and still learning."""
    policy = make_mixlab(reward="progress", actor_lr=1e-2)
    needs = policy.needs
    assert needs.gradients is None and needs.heldout_gradients is None
    rng = np.random.default_rng(0)
    for t in range(1, 301):
        tok = np.full(K, 64.0)
        loss = np.array([3.0, 4.0, 2.5 - 0.004 * t]) + rng.normal(0, 0.02, size=K)
        policy.update(Feedback(t, T, loss * tok, tok, np.ones(K)))
    logs = policy.log_values()
    assert logs["acodm/raw_reward/c"] > 5 * abs(logs["acodm/raw_reward/b"]) > 0
    assert logs["acodm/reward/c"] > 0 > logs["acodm/reward/b"]
    assert policy.weights()[2] == max(policy.weights()) > 1 / K
    assert np.abs(np.log(policy.weights() * K)).max() <= policy.opts.bound + 1e-9
    saved = policy.state_dict()
    again = make_mixlab(reward="progress", actor_lr=1e-2)
    again.load_state_dict(saved)
    assert again.state_dict()["progress"] == saved["progress"]


def test_guard_keeps_the_hardest_domain_at_its_prior() -> None:
    """The progress reward ranks b (hardest, flat) last and the actor pushes it below its
    prior; ``guard_hardest: 1`` raises it back to 1/K every step, taking the mass from the
    others in proportion to their weights, and logs how much it moved."""
    rng = np.random.default_rng(0)
    runs = {}
    for guard in (0, 1):
        policy = make_mixlab(reward="progress", actor_lr=1e-2, guard_hardest=guard)
        low = []
        for t in range(1, 301):
            tok = np.full(K, 64.0)
            loss = np.array([3.0, 4.0, 2.5 - 0.004 * t]) + rng.normal(0, 0.02, size=K)
            policy.update(Feedback(t, T, loss * tok, tok, np.ones(K)))
            low.append(policy.weights()[1])
        runs[guard] = (policy, np.array(low))
    free, guarded = runs[0][1][-100:], runs[1][1][-100:]
    assert free.max() < 1 / K - 0.02  # unguarded, the flat hardest domain is cut
    assert guarded.min() >= 1 / K - 1e-12 and guarded.max() < 1 / K + 1e-9
    logs = runs[1][0].log_values()
    assert logs["acodm/guard_mass"] > 0.02 and "acodm/guard_mass" not in runs[0][0].log_values()
    w = runs[1][0].weights()
    assert w[2] > w[0] and w.sum() == pytest.approx(1.0)


def slack_feedback(t: int, rng: np.random.Generator) -> Feedback:
    """b the hardest and flat, a 0.05 nats per doubling just below it, c easy and fast."""
    tok = np.full(K, 64.0)
    a = 4.4 - 0.05 * np.log2(t)  # 3.99 at t = 300
    loss = np.array([a, 4.0, 2.5 - 0.004 * t]) + rng.normal(0, 0.01, size=K)
    return Feedback(t, T, loss * tok, tok, np.ones(K))


def test_guard_worst_keeps_every_domain_within_its_slack() -> None:
    """b is the hardest and flat; a learns slowly (0.05 nats per doubling) just below it, c
    fast. The progress actor cuts a to its bound; ``guard_worst`` keeps every domain at or
    above p_i 2^(-(L_max - L_i) / d_i) from the progress estimate's EMA losses and drops (b at
    its prior), every step once all have one."""
    fb = slack_feedback
    cut = {}
    for guard in (False, True):
        rng = np.random.default_rng(0)
        policy = make_mixlab(reward="progress", actor_lr=1e-2, guard_worst=guard)
        assert policy._progress is not None
        lows = []
        for t in range(1, 301):
            policy.update(fb(t, rng))
            floors = worst_floors(
                policy.prior, np.nan_to_num(policy._progress.drops()), policy._progress.loss
            )
            lows.append(policy.weights()[0] - floors[0])
            if guard and t > policy.warmup_steps:
                assert (policy.weights() >= floors - 1e-12).all()
        cut[guard] = min(lows[-100:])
    assert floors[1] == pytest.approx(1 / K) and 0.2 < floors[0] < 1 / K
    assert cut[False] < -0.05 and cut[True] >= -1e-12  # unguarded, a falls below its floor
    assert policy.log_values()["acodm/guard_floor_sum"] == pytest.approx(floors.sum())


def test_guard_worst_holds_on_a_frozen_target(tmp_path: Path) -> None:
    """A frozen actor has no reward, but guard_worst keeps the progress estimate running on
    the target's own losses and its floors hold there too."""
    proxy = make_mixlab(reward="progress", actor_lr=1e-2, policy_out=str(tmp_path / "p.acodm.pt"))
    rng = np.random.default_rng(1)
    for t in range(1, 301):
        proxy.update(slack_feedback(t, rng))
    path = proxy.save_policy_file(tmp_path / "p.acodm.pt", {"seed": 0})
    target = make_mixlab(guard_worst=True, mode="frozen", policy_in=str(path))
    assert target._progress is not None
    rng = np.random.default_rng(2)
    for t in range(1, 301):
        target.update(slack_feedback(t, rng))
        floors = worst_floors(
            target.prior, np.nan_to_num(target._progress.drops()), target._progress.loss
        )
        if t > target.warmup_steps:
            assert (target.weights() >= floors - 1e-12).all()
    assert floors[0] > 0.2 and target.log_values()["acodm/guard_floor_sum"] > 0.5


def progress_feedback(t: int, rng: np.random.Generator) -> Feedback:
    """b is the hardest and flat, c the easiest and still learning (as in the tests above)."""
    tok = np.full(K, 64.0)
    loss = np.array([3.0, 4.0, 2.5 - 0.004 * t]) + rng.normal(0, 0.02, size=K)
    return Feedback(t, T, loss * tok, tok, np.ones(K))


def test_state_gain_shows_the_progress_estimate_and_shares_it_with_the_reward() -> None:
    """``state_gain`` appends clip3(z(g)) (dim 4K + 1); the reward reads the same estimator,
    updated once a step, so the rewards equal those of a run without the gain group."""
    from mixlab.mixing.acodm.reward import ProgressReward, zscore

    plain = make_mixlab(reward="progress", train_actor=False, exploration="none")
    gain = make_mixlab(reward="progress", state_gain=True, train_actor=False, exploration="none")
    assert gain.builder.dim == 4 * K + 1 == gain.spec.dim and plain.builder.dim == 3 * K + 1
    check = ProgressReward(K)
    rng = np.random.default_rng(0)
    for t in range(1, 121):
        fb = progress_feedback(t, rng)
        plain.update(fb)
        gain.update(fb)
        expected = check(fb.mean_loss(), fb.token_count)
        state = gain.last_state
        assert state is not None
        np.testing.assert_allclose(state[3 * K + 1 :], np.clip(zscore(expected), -3, 3))
        np.testing.assert_array_equal(state[: 3 * K + 1], plain.last_state)
        a, b = plain.log_values(), gain.log_values()
        assert a["acodm/raw_reward/c"] == b["acodm/raw_reward/c"]
    assert state[3 * K + 1 + 2] > 0 > state[3 * K + 1 + 1]  # c gains most, b least
    assert gain.state_dict()["progress"] == plain.state_dict()["progress"]


def split_feedback(t: int, rng: np.random.Generator) -> Feedback:
    """The training and held-out curves disagree. Training: a the hardest and flat, b learning,
    c flat. Held out (every 10 steps from t = 1, taken before step t's update): b the hardest
    and flat, c learning, a flat."""
    tok = np.full(K, 64.0)
    train = np.array([4.5, 4.0 - 0.004 * t, 3.0]) + rng.normal(0, 0.02, size=K)
    extras: dict[str, Any] = {}
    if (t - 1) % 10 == 0:
        extras["heldout_loss"] = np.array([3.0, 4.2, 3.5 - 0.004 * (t - 1)])
        extras["heldout_grad_count"] = np.full(K, 63.0)
    return Feedback(t, T, train * tok, tok, np.ones(K), extras=extras)


def test_heldout_progress_follows_the_heldout_curve_and_the_guard_ranks_by_it() -> None:
    """``progress_loss: heldout`` asks for a loss-only probe every heldout_every steps; the
    progress reward then favours c (learning on held-out text) over b (learning on the
    training text), and ``guard_hardest: 1`` holds b, the held-out hardest, at its prior
    (by the training loss it would hold a)."""
    kw: dict[str, Any] = {"reward": "progress", "actor_lr": 1e-2, "guard_hardest": 1}
    policies = {src: make_mixlab(progress_loss=src, **kw) for src in ("train", "heldout")}
    policies["heldout"] = make_mixlab(progress_loss="heldout", heldout_every=10, **kw)
    probe = make_mixlab(progress_loss="heldout", **kw).needs.heldout_gradients
    assert probe is not None and probe.losses_only
    assert (probe.every, probe.windows_per_domain) == (40, 8)  # progress_loss's defaults
    probe = policies["heldout"].needs.heldout_gradients  # every 10, as the feedback below
    assert probe is not None and (probe.every, probe.windows_per_domain) == (10, 8)
    assert policies["train"].needs.heldout_gradients is None
    rng = np.random.default_rng(0)
    for t in range(1, 301):
        fb = split_feedback(t, rng)
        for policy in policies.values():
            policy.update(fb)
    train, heldout = policies["train"].log_values(), policies["heldout"].log_values()
    assert train["acodm/raw_reward/b"] > train["acodm/raw_reward/c"]
    assert heldout["acodm/raw_reward/c"] > heldout["acodm/raw_reward/b"]
    assert heldout["acodm/heldout_loss/b"] == pytest.approx(4.2)
    w_train, w_heldout = policies["train"].weights(), policies["heldout"].weights()
    assert w_train[0] == pytest.approx(1 / K) and w_train[1] > w_train[2]
    assert w_heldout[1] == pytest.approx(1 / K) and w_heldout[2] > 1 / K > w_heldout[0]


@pytest.mark.parametrize(
    ("kw", "make_feedback"),
    [
        ({"reward": "progress", "state_gain": True}, progress_feedback),
        # probes at 41 and 51: saved at 45 with 4 steps of tokens pending
        ({"reward": "progress", "progress_loss": "heldout", "guard_hardest": 1}, split_feedback),
    ],
    ids=["state_gain", "heldout_progress"],
)
def test_progress_estimate_resumes_bit_identically(kw: dict[str, Any], make_feedback: Any) -> None:
    a = make_mixlab(**kw)
    rng = np.random.default_rng(0)
    for t in range(1, 46):
        a.update(make_feedback(t, rng))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_mixlab(**kw)
    b.load_state_dict(torch.load(buf, weights_only=False))
    for t in range(46, 71):
        fb = make_feedback(t, rng)
        a.update(fb)
        b.update(fb)
        assert np.array_equal(a.weights(), b.weights())
        assert np.array_equal(a.last_state, b.last_state)
    assert a.log_values() == b.log_values()


def test_heldout_progress_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"progress_loss.*does not use"):
        make_mixlab(reward="loss", progress_loss="heldout")
    with pytest.raises(ConfigError, match=r"progress_loss.*heldout_alignment"):
        make_mixlab(state_gain=True, progress_loss="heldout")  # MIXLAB's reward
    ok = make_mixlab(reward="loss", guard_worst=True, progress_loss="heldout")
    assert ok.needs.heldout_gradients is not None
    # a frozen target reads the estimate only for the state or guard_worst: no probe without
    proxy = make_mixlab(reward="progress", policy_out=str(tmp_path / "p.acodm.pt"))
    path = proxy.save_policy_file(tmp_path / "p.acodm.pt", {"seed": 0})
    kw: dict[str, Any] = {"reward": "progress", "progress_loss": "heldout", "mode": "frozen"}
    assert make_mixlab(policy_in=str(path), **kw).needs.heldout_gradients is None
    guarded = make_mixlab(policy_in=str(path), guard_worst=True, **kw)
    assert guarded.needs.heldout_gradients is not None


def test_state_gain_with_the_loss_reward_and_a_frozen_target(tmp_path: Path) -> None:
    """The gain group works with any reward, is recorded in the policy file, and a frozen
    target computes it (no reward) and must ask for it as its proxy did."""
    proxy = make_mixlab(reward="loss", state_gain=True, policy_out=str(tmp_path / "p.acodm.pt"))
    rng = np.random.default_rng(0)
    for t in range(1, 41):
        proxy.update(progress_feedback(t, rng))
    assert proxy.log_values()["acodm/raw_reward/b"] > proxy.log_values()["acodm/raw_reward/c"]
    path = proxy.save_policy_file(tmp_path / "p.acodm.pt", {"seed": 0})
    frozen = make_mixlab(policy_in=str(path), state_gain=True)
    for t in range(1, 41):
        frozen.update(progress_feedback(t, rng))
    state = frozen.last_state
    assert state is not None and state.shape == (4 * K + 1,) and np.abs(state[-K:]).max() > 0
    with pytest.raises(ConfigError, match=r"gain: file True vs run False"):
        make_mixlab(policy_in=str(path))
    with pytest.raises(ConfigError, match=r"state_gain.*state: mixlab"):
        make(state_gain=True)


def test_guard_needs_the_mixlab_state() -> None:
    with pytest.raises(ConfigError, match=r"guard_hardest.*state: mixlab"):
        make(guard_hardest=1)  # the paper variant's state has no loss EMA


def test_raise_to_floor() -> None:
    from mixlab.mixing.acodm.policy import raise_to_floor

    w = np.array([0.1, 0.3, 0.6])
    out = raise_to_floor(w, np.array([0.25, 0.0, 0.0]))
    np.testing.assert_allclose(out, [0.25, 0.3 * 0.75 / 0.9, 0.6 * 0.75 / 0.9])
    np.testing.assert_array_equal(raise_to_floor(w, np.array([0.1, 0.2, 0.0])), w)
    both = raise_to_floor(np.array([0.05, 0.05, 0.9]), np.array([0.2, 0.1, 0.3]))
    np.testing.assert_allclose(both, [0.2, 0.1, 0.7])  # c keeps its own floor of 0.3


def test_epoch_caps_compose_with_the_bound() -> None:
    """mixing.max_epochs caps the prior first, then every mixture; the Mixer's own clip is
    then a no-op. Domain c (100 tokens) may take at most 4 epochs of a 6000-token budget."""
    from mixlab.mixing.budget import clip_to_caps

    ctx = PolicyContext(DOMAINS, np.array([1000, 1000, 100]), 0, T, tokens_per_step=100)
    policy = make_mixlab(ctx, max_epochs=4.0, actor_lr=1e-2)
    caps = np.array([4000, 4000, 400]) / 6000
    np.testing.assert_allclose(policy.prior, clip_to_caps(np.full(3, 1 / 3), caps))
    rng = np.random.default_rng(0)
    for t in range(1, 201):
        policy.update(mixlab_feedback(t, rng, favour=2))  # the actor wants more of c
        w = policy.weights()
        assert (w <= caps + 1e-12).all()
        np.testing.assert_allclose(clip_to_caps(w, caps), w, rtol=1e-12)  # the Mixer: no-op
    assert policy.log_values()["acodm/max_cap_use"] > 0


def test_priors() -> None:
    from mixlab.mixing.acodm.policy import prior_weights
    from mixlab.mixing.budget import unimax_weights

    ctx = PolicyContext(DOMAINS, np.array([100, 1000, 3000]), 0, 10, tokens_per_step=200)
    np.testing.assert_allclose(prior_weights("uniform", ctx), np.full(3, 1 / 3))
    np.testing.assert_allclose(
        prior_weights("natural", ctx), [100 / 4100, 1000 / 4100, 3000 / 4100]
    )
    np.testing.assert_allclose(
        prior_weights("unimax", ctx), unimax_weights([100, 1000, 3000], 2000, 4.0)
    )
    np.testing.assert_allclose(
        prior_weights("unimax", ctx, 2.0), unimax_weights([100, 1000, 3000], 2000, 2.0)
    )
    policy = make_mixlab(ctx, prior="natural")
    np.testing.assert_allclose(policy.weights(), policy.prior)
    with pytest.raises(DataError, match="prior gives no weight"):
        make_mixlab(PolicyContext(DOMAINS, np.array([0, 10, 10]), 0, T), prior="natural")


def test_prior_from_a_weights_file(tmp_path: Path) -> None:
    """prior: file moves around the mixture of a JSON weights file (e.g. the headroom optimum
    that scripts/mixture_headroom.py writes), within the same bound; errors name the field."""
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"a": 0.6, "b": 0.3, "c": 0.1}))
    policy = make_mixlab(prior="file", prior_file=str(path), actor_lr=1e-2)
    np.testing.assert_allclose(policy.prior, [0.6, 0.3, 0.1])
    np.testing.assert_allclose(policy.weights(), policy.prior)
    rng = np.random.default_rng(0)
    for t in range(1, 201):
        policy.update(mixlab_feedback(t, rng, favour=2))
        ratio = np.abs(np.log(policy.weights() / policy.prior))
        assert ratio.max() <= 1.0 + 1e-9  # the default bound, around the file's mixture
    with pytest.raises(ConfigError, match="prior_file goes with"):
        make_mixlab(prior_file=str(path))
    with pytest.raises(ConfigError, match="prior_file goes with"):
        make_mixlab(prior="file")
    with pytest.raises(ConfigError, match=r"mixing\.acodm\.prior_file .*not found"):
        make_mixlab(prior="file", prior_file=str(tmp_path / "missing.json"))
    path.write_text(json.dumps({"a": 0.7, "b": 0.3, "c": 0.0}))
    with pytest.raises(DataError, match="prior gives no weight"):
        make_mixlab(prior="file", prior_file=str(path))


def test_n_step_transitions() -> None:
    """horizon n: (s_t-n, a_t-n+1, sum_k gamma^k r_t-n+1+k, s_t) once n rewards are in."""
    policy = make(horizon=3, gamma=0.5)
    rng = np.random.default_rng(0)
    rewards = []
    for t in range(1, 8):
        policy.update(feedback(t, rng))
        rewards.append([policy.log_values()[f"acodm/reward/{d}"] for d in DOMAINS])
    buf = policy.agent.buffer.state_dict()
    r = np.array(rewards)
    assert len(policy.agent.buffer) == 5  # steps 3..7
    np.testing.assert_allclose(buf["r"][0].numpy(), r[0] + 0.5 * r[1] + 0.25 * r[2], rtol=1e-5)
    np.testing.assert_allclose(buf["r"][4].numpy(), r[4] + 0.5 * r[5] + 0.25 * r[6], rtol=1e-5)
    assert torch.equal(buf["s2"][0], buf["s"][3])  # s' = s_(t+3)


def test_mixlab_state_dict_round_trip() -> None:
    a = make_mixlab(horizon=2, gamma=0.5)
    rng = np.random.default_rng(0)
    for t in range(1, 25):
        a.update(mixlab_feedback(t, rng, favour=1))
    assert a.phase == "main"
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_mixlab(PolicyContext(DOMAINS, TOKENS, 5, T), horizon=2, gamma=0.5)
    b.load_state_dict(torch.load(buf, weights_only=False))
    for t in range(25, 45):
        fb = mixlab_feedback(t, rng, favour=1)
        a.update(fb)
        b.update(fb)
        assert np.array_equal(a.weights(), b.weights())
    assert a.log_values() == b.log_values()


def test_mixlab_frozen_needs_nothing_from_the_model(tmp_path: Path) -> None:
    proxy = make_mixlab(policy_out=str(tmp_path / "p.acodm.pt"))
    rng = np.random.default_rng(0)
    for t in range(1, 31):
        proxy.update(mixlab_feedback(t, rng, favour=0))
    path = proxy.save_policy_file(tmp_path / "p.acodm.pt", {"seed": 0})
    frozen = make_mixlab(policy_in=str(path))
    assert frozen.opts.mode == "frozen" and not frozen.needs.looks_inside_model
    pf = load_policy_file(path, DOMAINS, state_spec(frozen.opts, K), bound=1.0)
    actor = build_actor(pf, frozen.prior)
    plain = Feedback(1, T, np.full(K, 300.0), np.full(K, 100.0), np.ones(K))
    for t in range(1, 41):
        frozen.update(dataclasses.replace(plain, step=t))
        if t >= frozen.warmup_steps:
            s = torch.as_tensor(frozen.last_state, dtype=torch.float32)
            with torch.no_grad():
                np.testing.assert_allclose(frozen.weights(), actor(s).numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match=r"kind: file .paper. vs run .mixlab."):  # paper file
        paper = make(mode="proxy_train")
        run(paper, range(1, 5))
        old = paper.save_policy_file(tmp_path / "paper.acodm.pt", {})
        make_mixlab(policy_in=str(old))
