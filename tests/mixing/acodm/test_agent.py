"""AC-ODM DDPG agent (METHODS.md §2.4, §2.6): the actor is really trained (and bit-identical
with the release's train_actor=false), no critic leak by default, a learning signal from a
scripted reward, behaviour cloning, critic targets, exploration, replay, separate RNG, resume."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mixlab.mixing.acodm.agent import DdpgAgent, ReplayBuffer
from mixlab.mixing.acodm.options import AcodmOptions

K, D = 4, 5
S = 3 * K + 2 * D + 1


def make(seed: int = 0, **kw: Any) -> DdpgAgent:
    opts = AcodmOptions(
        **{"variant": "paper", "hidden": 32, "batch_size": 8, "buffer_size": 64, **kw}
    )
    return DdpgAgent(S, K, opts, seed=seed)


def fill(agent: DdpgAgent, n: int = 16, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        a = rng.dirichlet(np.ones(K))
        agent.push(rng.normal(size=S), a, rng.normal(size=K), rng.normal(size=S), np.ones(K))


def params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_actor_changes_after_one_update() -> None:
    agent = make()
    fill(agent)
    before = params(agent.actor)
    agent.update()
    assert not same(before, params(agent.actor))
    assert agent.drift()[0] > 0


def test_actor_bit_identical_without_train_actor() -> None:
    agent = make(train_actor=False)
    fill(agent, 32)
    before, critic_before = params(agent.actor), params(agent.critic)
    for i in range(100):
        agent.warmup_update() if i < 20 else agent.update()
    assert same(before, params(agent.actor))
    assert agent.drift()[0] == 0.0  # the release bug shows as exactly zero drift
    assert not same(critic_before, params(agent.critic)) and agent.drift()[1] > 0


@pytest.mark.parametrize("train_actor", [True, False])
def test_actor_step_never_changes_critic_without_leak(train_actor: bool) -> None:
    agent = make(train_actor=train_actor)
    fill(agent)
    agent.update()  # give the optimisers some state first
    critic, actor = params(agent.critic), params(agent.actor)
    agent.actor_step(agent.sample_batch())
    assert same(critic, params(agent.critic))
    assert same(actor, params(agent.actor)) != train_actor
    assert all(p.grad is None for p in agent.critic.parameters())


def test_critic_grad_leak_steps_the_critic_on_the_actor_loss() -> None:
    agent = make(train_actor=False, critic_grad_leak=True)  # the release combination
    fill(agent)
    critic, actor = params(agent.critic), params(agent.actor)
    agent.actor_step(agent.sample_batch())
    assert not same(critic, params(agent.critic))
    assert same(actor, params(agent.actor))


def scripted_learning(objective: str) -> dict[int, float]:
    """Fixed state, reward +2 for domain j and -2/(K-1) elsewhere; w_j after n updates."""
    agent = make(seed=1, actor_objective=objective, batch_size=16, buffer_size=1000)
    j = 2
    state = np.random.default_rng(5).normal(size=S)
    reward = np.full(K, -2.0 / (K - 1))
    reward[j] = 2.0
    out = {}
    for n in range(1, 301):
        agent.push(state, agent.act(state, "logit_gaussian", 0.1), reward, state, np.ones(K))
        if agent.ready:
            agent.update()
        if n in (100, 300):
            out[n] = float(agent.act(state)[j])
    return out


def test_learning_signal_weighted_objective() -> None:
    w = scripted_learning("weighted")
    assert w[300] > 1 / K
    assert w[300] > w[100]


def test_policy_output_responds_to_state() -> None:
    agent = make()
    rng = np.random.default_rng(0)
    a1, a2 = agent.act(rng.normal(size=S)), agent.act(rng.normal(size=S))
    for a in (a1, a2):
        assert a.dtype == np.float64 and a.min() >= 0 and abs(a.sum() - 1) < 1e-12
    assert np.abs(a1 - a2).max() > 1e-4


def test_behaviour_cloning_fits_the_warmup_mixer() -> None:
    target = np.array([0.55, 0.25, 0.15, 0.05])
    results = {}
    for train_actor in (True, False):
        agent = make(train_actor=train_actor, actor_lr=3e-3)
        rng = np.random.default_rng(0)
        for _ in range(32):
            s = rng.normal(size=S)
            agent.push(s, target, np.zeros(K), s, np.ones(K))
        first = agent.warmup_update()["bc_loss"]
        for _ in range(80):
            last = agent.warmup_update()["bc_loss"]
        results[train_actor] = (first, last)
    first, last = results[True]
    assert last < 0.2 * first
    first, last = results[False]
    assert last == pytest.approx(first, rel=0.5)  # untrained: loss only varies with the batch


def test_release_warmup_target_is_one_plus_gamma_times_reward() -> None:
    agent = make(warmup_critic_target="r_plus_gamma_r", critic_lr=2e-2, gamma=0.5)
    s, a = np.ones(S), np.full(K, 1 / K)
    r = np.array([1.0, -1.0, 0.5, 0.0])
    for _ in range(16):
        agent.push(s, a, r, s, np.ones(K))
    for _ in range(150):
        agent.warmup_update()
    with torch.no_grad():
        q = agent.critic(torch.ones(1, S), torch.full((1, K), 1 / K))[0].numpy()
    np.testing.assert_allclose(q, 1.5 * r, atol=0.05)


def test_scalar_critic_and_mean_objective_run() -> None:
    options: list[dict[str, Any]] = [{"critic_output": "scalar"}, {"actor_objective": "mean"}]
    for kw in options:
        agent = make(**kw)
        fill(agent)
        stats = agent.update()
        assert set(stats) == {"critic_loss", "actor_loss", "mean_q"}
        assert all(np.isfinite(v) for v in stats.values())
    with torch.no_grad():
        q = make(critic_output="scalar").critic(torch.zeros(3, S), torch.zeros(3, K))
    assert q.shape == (3, 1)


def test_masked_domains_do_not_enter_the_critic_loss() -> None:
    losses = []
    for junk in (0.0, 1000.0):
        agent = make()
        rng = np.random.default_rng(0)
        for _ in range(8):
            r = rng.normal(size=K)
            r[0] = junk
            agent.push(
                rng.normal(size=S), np.full(K, 0.25), r, rng.normal(size=S), np.array([0, 1, 1, 1])
            )
        losses.append(agent.critic_step(agent.sample_batch(), "td")[0])
    assert losses[0] == losses[1]


def test_exploration_modes() -> None:
    agent = make()
    s = np.random.default_rng(0).normal(size=S)
    plain = agent.act(s, "none")
    assert np.array_equal(plain, agent.act(s, "none"))
    noisy = agent.act(s, "logit_gaussian", 0.1)
    assert not np.array_equal(noisy, plain) and abs(noisy.sum() - 1) < 1e-12
    release = agent.act(s, "release")
    assert release.min() >= 0 and abs(release.sum() - 1) < 1e-12
    assert 0 < np.abs(release - plain).max() < 2e-3
    assert np.array_equal(agent.act(s, "logit_gaussian", 0.0), plain)


def test_targets_soft_and_hard_updates() -> None:
    agent = make(tau=0.25)
    fill(agent)
    old_target = params(agent.actor_target)
    agent.update()
    expected = [0.75 * t + 0.25 * p for t, p in zip(old_target, params(agent.actor), strict=True)]
    for got, want in zip(params(agent.actor_target), expected, strict=True):
        torch.testing.assert_close(got, want)
    agent.hard_update_targets()
    assert same(params(agent.actor_target), params(agent.actor))
    assert same(params(agent.critic_target), params(agent.critic))


def test_replay_is_fifo_and_samples_without_replacement() -> None:
    buf = ReplayBuffer(3, 2, 2)
    for i in range(5):
        buf.push(s=np.full(2, i), a=np.zeros(2), r=np.zeros(2), s2=np.zeros(2), mask=np.ones(2))
    assert len(buf) == 3
    batch = buf.sample(3, torch.Generator().manual_seed(0))
    assert sorted(batch.s[:, 0].tolist()) == [2.0, 3.0, 4.0]
    fresh = ReplayBuffer(3, 2, 2)
    fresh.load_state_dict(buf.state_dict())
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(fresh.sample(2, g1).s, buf.sample(2, g2).s)


def test_agent_threads_are_restored() -> None:
    agent = make()
    fill(agent)
    torch.set_num_threads(2)
    agent.update()
    agent.act(np.ones(S))
    assert torch.get_num_threads() == 2


def test_global_rng_untouched_and_seeded() -> None:
    before = torch.get_rng_state()
    a, b = make(seed=3), make(seed=3)
    fill(a)
    fill(b)
    for agent in (a, b):
        agent.update()
        agent.act(np.ones(S), "logit_gaussian", 0.1)
    assert torch.equal(before, torch.get_rng_state())
    assert same(params(a.actor), params(b.actor))
    assert not same(params(make(seed=4).actor), params(make(seed=3).actor))


def test_state_dict_round_trip_is_bit_identical() -> None:
    a = make()
    fill(a, 20)
    for _ in range(5):
        a.update()
    saved = a.state_dict()
    a.update()  # the saved dict must not alias live tensors
    b = make(seed=99)
    b.load_state_dict(saved)
    c = make(seed=7)
    c.load_state_dict(saved)
    s = np.random.default_rng(0).normal(size=S)
    for _ in range(5):
        b.update(), c.update()
        assert np.array_equal(b.act(s, "logit_gaussian", 0.1), c.act(s, "logit_gaussian", 0.1))
    assert same(params(b.critic_target), params(c.critic_target))
    assert b.drift() == c.drift() and b.updates == c.updates == 10


def adversarial(agent: DdpgAgent, updates: int, j: int = 2, seed: int = 0) -> list[np.ndarray]:
    """A constant zero-sum reward (+0.3 for domain j) and random states; the acted mixtures."""
    rng = np.random.default_rng(seed)
    reward = np.full(K, -0.3 / (K - 1))
    reward[j] = 0.3
    s, acted = rng.normal(size=S), []
    for _ in range(updates):
        a = agent.act(s, "logit_gaussian", 0.1)
        acted.append(a)
        s2 = rng.normal(size=S)
        agent.push(s, a, reward, s2, np.ones(K))
        if agent.ready:
            agent.update()
        s = s2
    acted.append(agent.act(s))
    return acted


def test_paper_actor_goes_to_a_vertex_under_a_constant_reward() -> None:
    """The collapse in one test: sum_i a_i Q_i over a softmax is linear in a, so a reward that
    says nothing about the action drives the paper's actor to a vertex (issue 18)."""
    agent = make(seed=0, actor_lr=1e-3, batch_size=16, buffer_size=1000)
    final = adversarial(agent, 400)[-1]
    assert final.max() > 0.9


@pytest.mark.parametrize("kl_coef", [1.0, 0.0])
def test_bounded_actor_never_leaves_its_bound(kl_coef: float) -> None:
    """mixlab: the same adversarial reward tilts the mixture toward the advantaged domain,
    but every acted mixture (exploration included) keeps |log(w_i / p0_i)| <= bound."""
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    opts = AcodmOptions(
        variant="mixlab", hidden=32, batch_size=16, buffer_size=1000, kl_coef=kl_coef, bound=0.5
    )
    agent = DdpgAgent(S, K, opts, seed=0, prior=prior)
    acted = adversarial(agent, 600, j=3)
    ratios = np.abs(np.log(np.array(acted) / prior))
    assert ratios.max() <= 0.5 + 1e-9
    assert acted[-1][3] > prior[3]  # it does move toward the advantaged domain


def test_bound_holds_for_any_actor_output() -> None:
    from mixlab.mixing.acodm.agent import Actor

    prior = np.array([0.7, 0.2, 0.05, 0.05])
    actor = Actor(S, K, 8, 1, bound=1.0, prior=prior)
    raw = torch.tensor([[1e6, -1e6, 1e6, -1e6], [-50.0, 50.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    w = torch.softmax(actor.logits_from_raw(raw), dim=-1).double().numpy()
    ratio = np.log(w / prior)
    assert np.abs(ratio).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(w[2], prior, rtol=1e-6)  # zero output: the prior itself
    unbounded = Actor(S, K, 8, 1, bound=None, prior=prior)
    w = torch.softmax(unbounded.logits_from_raw(raw[1:2]), dim=-1).numpy()
    assert w.max() > 0.99  # the paper's softmax reaches a vertex


def test_zero_init_actor_outputs_the_prior_until_trained() -> None:
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    opts = AcodmOptions(variant="mixlab", hidden=16, batch_size=8, buffer_size=64)
    agent = DdpgAgent(S, K, opts, seed=0, prior=prior)
    rng = np.random.default_rng(0)
    for _ in range(3):
        np.testing.assert_allclose(agent.act(rng.normal(size=S)), prior, rtol=1e-6)
    np.testing.assert_allclose(agent.prior, prior, rtol=1e-6)
    fill(agent)
    agent.update()
    assert not np.allclose(agent.act(rng.normal(size=S)), prior, rtol=1e-6)


def test_gamma_zero_and_short_horizons_do_not_bootstrap() -> None:
    """gamma 0 (contextual bandit) or bootstrap false: the critic's target is the stored
    reward itself, so it fits r; with the bootstrap it fits r + gamma^n Q-."""
    s, a = np.ones(S), np.full(K, 1 / K)
    r = np.array([1.0, -1.0, 0.5, 0.0])
    fits = {}
    for name, kw in {
        "bandit": {"gamma": 0.0},
        "no_bootstrap": {"gamma": 0.9, "horizon": 3, "bootstrap": False},
    }.items():
        agent = make(critic_lr=2e-2, **kw)
        for _ in range(16):
            agent.push(s, a, r, s, np.ones(K))
        for _ in range(150):
            agent.critic_step(agent.sample_batch(), "td")
        with torch.no_grad():
            fits[name] = agent.critic(torch.ones(1, S), torch.full((1, K), 1 / K))[0].numpy()
        np.testing.assert_allclose(fits[name], r, atol=0.05)
    # With the bootstrap the fixed point is Q = r / (1 - gamma^n) (same state, tau 1).
    boot = make(gamma=0.5, horizon=2, tau=1.0, critic_lr=2e-2)
    for _ in range(16):
        boot.push(s, a, r, s, np.ones(K))
    for _ in range(400):
        boot.critic_step(boot.sample_batch(), "td")
        boot.critic_target.load_state_dict(boot.critic.state_dict())
    with torch.no_grad():
        q = boot.critic(torch.ones(1, S), torch.full((1, K), 1 / K))[0].numpy()
    np.testing.assert_allclose(q, r / (1 - 0.5**2), atol=0.1)
