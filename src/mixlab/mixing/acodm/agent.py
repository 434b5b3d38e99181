"""The AC-ODM controller: a DDPG actor-critic over mixtures (METHODS.md §2.4, arXiv 1509.02971).

Networks (fp32, CPU, PyTorch's default Linear init drawn from the agent's own generator):

* actor  pi_phi(s)   = softmax(log p0 + f(u_phi(s))), u_phi = Linear(H, K)([Linear -> LayerNorm
  -> ReLU] x n_hidden (s)); f(u) = u (``bound: none``, the paper: p0 uniform makes it a plain
  softmax) or f(u) = (bound/2) tanh(u) (mixlab: every |log(w_i / p0_i)| <= bound, since the
  normaliser log Z is itself within [-bound/2, bound/2]). With ``zero_init_head`` the last
  layer starts at zero, so the actor outputs p0 exactly until it is trained.
* critic Q_psi(s, a) = Linear(H, K or 1)(same trunk (concat(s, a)))  -- vector or scalar
* targets phi-, psi- start as copies.

Replay: a FIFO ring of capacity C holding (s, a, r, s', mask); minibatches of N are drawn
uniformly without replacement. With ``horizon`` n > 1 the policy stores n-step transitions
(r = sum_k gamma^k r_{t+k}, s' = s_{t+n}). Warm-up update (:meth:`DdpgAgent.warmup_update`): a
critic fit on ``warmup_critic_target`` (``td`` or the release's y = (1 + gamma) r) and, with
behaviour cloning (the paper's ODM warm-up), L_BC = mean_b ||pi_phi(s) - a||^2. Main update
(:meth:`DdpgAgent.update`):

1. critic: y = r + gamma^n Q_psi-(s', pi_phi-(s')) (``bootstrap``; gamma = 0 or no bootstrap:
   y = r, a contextual bandit / short-horizon return; scalar critic: r -> R = sum_i a_i r_i);
   L_Q = masked mean (Q_psi(s, a) - y)^2; only the critic optimiser steps (grad clip).
2. actor (``train_actor``): L_pi = -mean_b [sum_i a^_i Q_i(s, a^) - lambda KL(a^ || p0)]
   (``weighted``; lambda = ``kl_coef``, 0 in the paper), -mean Q (``mean`` or scalar critic),
   a^ = pi_phi(s). Only the actor optimiser steps; psi gets no gradient unless
   ``critic_grad_leak`` (release), where the critic optimiser also steps on the actor loss --
   gradient *ascent* on Q.
3. soft updates phi- <- (1 - tau) phi- + tau phi, psi- likewise (also after warm-up updates;
   :meth:`hard_update_targets` copies at the end of warm-up).

Why the prior, the bound and lambda (mixlab; see :mod:`mixlab.mixing.acodm`): sum_i a_i Q_i is
linear in a, so without them its maximiser over the simplex is a vertex, whatever Q says.

With ``train_actor=false`` (the release bug) the actor optimiser is never stepped, so the actor
stays bit-identical to its initialisation; :meth:`drift` reports ||phi - phi_0|| and
||psi - psi_0|| so that shows up as exactly 0 in the logs.

The networks are tiny, so updates and acting run with ``agent_threads`` (1) torch intra-op
threads -- thread synchronisation would cost more than the parallel matmuls save -- and the
previous setting is restored afterwards.

Every random draw (init, replay sampling, exploration noise) comes from one
``torch.Generator`` seeded from the run seed; torch's global RNG is never used, so the LM's
random stream is the same with or without AC-ODM. ``state_dict`` holds networks, targets,
optimisers, replay, generator and the initial parameters.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch import nn

from mixlab.mixing.acodm.options import AcodmOptions, is_bounded, with_variant_defaults

RELEASE_NOISE = 1e-3  # the release subtracts U(0, 1e-3) per domain

M = TypeVar("M", bound=nn.Module)


def _trunk(in_dim: int, hidden: int, n_hidden: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_hidden):
        layers += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
    return nn.Sequential(*layers)


def _init_from(module: M, generator: torch.Generator) -> M:
    """Materialise a meta-device module with PyTorch's default init, drawn from ``generator``."""
    module = module.to_empty(device="cpu")
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()  # ones / zeros: no randomness
    return module


class Actor(nn.Module):
    """State -> mixture on the simplex: softmax(log p0 + f(u(s))), f = identity or bounded.

    ``prior`` p0 (default uniform) is a non-persistent buffer: a policy file carries the
    network, and each run supplies its own prior. ``bound`` None = unbounded.
    """

    log_prior: torch.Tensor

    def __init__(
        self,
        state_dim: int,
        num_domains: int,
        hidden: int,
        n_hidden: int,
        *,
        bound: float | None = None,
        prior: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.trunk = _trunk(state_dim, hidden, n_hidden)
        self.head = nn.Linear(hidden, num_domains)
        self.bound = None if bound is None else float(bound)
        p0 = np.full(num_domains, 1.0 / num_domains) if prior is None else np.asarray(prior)
        if p0.shape != (num_domains,) or not (p0 > 0).all():
            raise ValueError(f"Actor: the prior must be ({num_domains},) and > 0, got {p0}")
        log_p0 = torch.as_tensor(np.log(p0 / p0.sum()), dtype=torch.float32)
        self.register_buffer("log_prior", log_p0, persistent=False)

    def raw(self, s: torch.Tensor) -> torch.Tensor:
        """u(s): the head's output before the bound."""
        return self.head(self.trunk(s))

    def logits_from_raw(self, u: torch.Tensor) -> torch.Tensor:
        shift = u if self.bound is None else 0.5 * self.bound * torch.tanh(u)
        return self.log_prior.to(u.dtype) + shift

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        return self.logits_from_raw(self.raw(s))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(s), dim=-1)


class Critic(nn.Module):
    """(state, mixture) -> one value per domain (vector) or a single value (scalar)."""

    def __init__(
        self, state_dim: int, num_domains: int, hidden: int, n_hidden: int, output: str
    ) -> None:
        super().__init__()
        self.trunk = _trunk(state_dim + num_domains, hidden, n_hidden)
        self.head = nn.Linear(hidden, num_domains if output == "vector" else 1)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(torch.cat([s, a], dim=-1)))


class Batch(NamedTuple):
    s: torch.Tensor  # (N, S)
    a: torch.Tensor  # (N, K)
    r: torch.Tensor  # (N, K)
    s2: torch.Tensor  # (N, S)
    mask: torch.Tensor  # (N, K) float: 1 = domain present in that step


class ReplayBuffer:
    """FIFO ring of transitions in preallocated fp32 tensors."""

    FIELDS = ("s", "a", "r", "s2", "mask")

    def __init__(self, capacity: int, state_dim: int, num_domains: int) -> None:
        self.capacity = capacity
        dims = {"s": state_dim, "a": num_domains, "r": num_domains, "s2": state_dim}
        dims["mask"] = num_domains
        self._data = {k: torch.zeros(capacity, n) for k, n in dims.items()}
        self._size = 0
        self._next = 0  # slot written next; the oldest entry once full

    def __len__(self) -> int:
        return self._size

    def push(self, **values: np.ndarray) -> None:
        for key in self.FIELDS:
            row = torch.as_tensor(np.asarray(values[key], dtype=np.float32))
            self._data[key][self._next] = row
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        idx = torch.randperm(self._size, generator=generator)[:n]
        return Batch(*(self._data[k][idx] for k in self.FIELDS))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {k: v[: self._size].clone() for k, v in self._data.items()}
        state.update(capacity=self.capacity, size=self._size, next=self._next)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"replay buffer: saved capacity {state['capacity']} != {self.capacity}"
            )
        for k, v in self._data.items():
            if state[k].shape[1:] != v.shape[1:]:
                raise ValueError(f"replay buffer: saved {k} rows {tuple(state[k].shape)}")
            v.zero_()
            v[:size] = state[k]
        self._size, self._next = size, int(state["next"])


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0 = unchanged), then restore."""
    before = torch.get_num_threads()
    change = n > 0 and n != before
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class DdpgAgent:
    """Actor, critic, their targets, optimisers, replay and RNG of one AC-ODM controller."""

    def __init__(
        self,
        state_dim: int,
        num_domains: int,
        opts: AcodmOptions,
        seed: int,
        prior: np.ndarray | None = None,
    ) -> None:
        """``opts``' null fields take the variant's values; ``prior`` p0 (default uniform)."""
        opts = with_variant_defaults(opts)
        self.state_dim, self.num_domains, self.opts = state_dim, num_domains, opts
        self.generator = torch.Generator().manual_seed(int(seed))
        h, n = opts.hidden, opts.n_hidden
        bound = float(opts.bound) if is_bounded(opts) else None  # type: ignore[arg-type]
        with torch.device("meta"):
            actor = Actor(state_dim, num_domains, h, n, bound=bound)
            critic = Critic(state_dim, num_domains, h, n, opts.critic_output)
        self.actor = _init_from(actor, self.generator)
        self.set_prior(np.full(num_domains, 1.0 / num_domains) if prior is None else prior)
        if opts.zero_init_head:
            with torch.no_grad():
                self.actor.head.weight.zero_()
                self.actor.head.bias.zero_()
        self.critic = _init_from(critic, self.generator)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.AdamW(
            self.actor.parameters(),
            lr=float(opts.actor_lr),  # type: ignore[arg-type]
            weight_decay=opts.weight_decay,
        )
        self.critic_opt = torch.optim.AdamW(
            self.critic.parameters(), lr=opts.critic_lr, weight_decay=opts.weight_decay
        )
        self.buffer = ReplayBuffer(opts.buffer_size, state_dim, num_domains)
        self._actor0, self._critic0 = _flat(self.actor), _flat(self.critic)
        self.updates = 0
        self.skipped_steps = 0  # optimiser steps skipped for a non-finite gradient

    def set_prior(self, prior: np.ndarray) -> None:
        """p0 of the actor and its target (normalised; every entry must be > 0)."""
        p0 = np.asarray(prior, dtype=np.float64)
        if p0.shape != (self.num_domains,) or not (p0 > 0).all() or not np.isfinite(p0).all():
            raise ValueError(f"acodm: the prior must be {self.num_domains} weights > 0, got {p0}")
        log_p0 = torch.as_tensor(np.log(p0 / p0.sum()), dtype=torch.float32)
        for net in (self.actor, getattr(self, "actor_target", None)):
            if net is not None:
                net.log_prior.copy_(log_p0)

    @property
    def prior(self) -> np.ndarray:
        """(K,) float64 p0."""
        return np.exp(self.actor.log_prior.double().numpy())

    # ------------------------------------------------------------------ replay
    def push(
        self, s: np.ndarray, a: np.ndarray, r: np.ndarray, s2: np.ndarray, mask: np.ndarray
    ) -> None:
        self.buffer.push(s=s, a=a, r=r, s2=s2, mask=np.asarray(mask, dtype=np.float32))

    @property
    def ready(self) -> bool:
        """Enough transitions for one minibatch."""
        return len(self.buffer) >= self.opts.batch_size

    def set_lr_scale(self, scale: float) -> None:
        """Set both learning rates to ``scale`` x their configured peak."""
        for group in self.actor_opt.param_groups:
            group["lr"] = float(self.opts.actor_lr) * scale  # type: ignore[arg-type]
        for group in self.critic_opt.param_groups:
            group["lr"] = self.opts.critic_lr * scale

    # ------------------------------------------------------------------ updates
    def sample_batch(self) -> Batch:
        """N transitions drawn uniformly without replacement with the agent's generator."""
        return self.buffer.sample(self.opts.batch_size, self.generator)

    def warmup_update(self, behaviour_cloning: bool = True) -> dict[str, float]:
        """Critic fit, and behaviour cloning of the warm-up mixer; returns the losses."""
        with _threads(self.opts.agent_threads):
            batch = self.sample_batch()
            critic_loss, mean_q = self.critic_step(batch, self.opts.warmup_critic_target)
            if not behaviour_cloning:  # the warm-up mixture is the actor's own p0
                self._soft_update()
                self.updates += 1
                return {"critic_loss": critic_loss, "mean_q": mean_q}
            if self.opts.train_actor:
                bc = ((self.actor(batch.s) - batch.a) ** 2).sum(dim=-1).mean()
                self._step(self.actor_opt, self.actor, bc)
            else:  # release: the BC loss is computed, but no actor step ever applies it
                with torch.no_grad():
                    bc = ((self.actor(batch.s) - batch.a) ** 2).sum(dim=-1).mean()
            self._soft_update()
        self.updates += 1
        return {"critic_loss": critic_loss, "bc_loss": float(bc.detach()), "mean_q": mean_q}

    def update(self) -> dict[str, float]:
        """One DDPG update (critic, actor, soft targets); returns the losses."""
        with _threads(self.opts.agent_threads):
            batch = self.sample_batch()
            critic_loss, mean_q = self.critic_step(batch, "td")
            actor_loss = self.actor_step(batch)
            self._soft_update()
        self.updates += 1
        return {"critic_loss": critic_loss, "actor_loss": actor_loss, "mean_q": mean_q}

    def critic_step(self, batch: Batch, target: str) -> tuple[float, float]:
        """Fit Q_psi on ``batch`` (target ``td`` or ``r_plus_gamma_r``); (L_Q, mean Q)."""
        gamma, scalar = float(self.opts.gamma), self.opts.critic_output == "scalar"  # type: ignore[arg-type]
        with torch.no_grad():
            reward = (batch.a * batch.r).sum(-1, keepdim=True) if scalar else batch.r
            if target == "td" and not (gamma > 0 and self.opts.bootstrap):
                y = reward  # contextual bandit (gamma 0) or a pure n-step return
            elif target == "td":
                q_next = self.critic_target(batch.s2, self.actor_target(batch.s2))
                y = reward + gamma**self.opts.horizon * q_next
            else:  # r_plus_gamma_r: the release's warm-up target, no bootstrap
                y = (1.0 + gamma) * reward
        q = self.critic(batch.s, batch.a)
        err = (q - y) ** 2
        # Vector critic: an absent domain's output has no reward to fit in that transition.
        masked = (err * batch.mask).sum() / batch.mask.sum().clamp_min(1.0)
        loss = err.mean() if scalar else masked
        self._step(self.critic_opt, self.critic, loss)
        return float(loss.detach()), float(q.detach().mean())

    def _actor_loss(self, batch: Batch) -> torch.Tensor:
        logits = self.actor.logits(batch.s)
        a_hat = torch.softmax(logits, dim=-1)
        q = self.critic(batch.s, a_hat)
        if self.opts.critic_output == "vector" and self.opts.actor_objective == "weighted":
            value = (a_hat * q).sum(dim=-1)
        else:
            value = q.mean(dim=-1)
        kl_coef = float(self.opts.kl_coef)  # type: ignore[arg-type]
        if kl_coef > 0:  # KL(a^ || p0) = sum_i a^_i (log a^_i - log p0_i)
            log_a = torch.log_softmax(logits, dim=-1)
            value = value - kl_coef * (a_hat * (log_a - self.actor.log_prior)).sum(dim=-1)
        return -value.mean()

    def actor_step(self, batch: Batch) -> float:
        """The actor objective on ``batch``: steps what the switches say; returns L_pi."""
        opts = self.opts
        if not (opts.train_actor or opts.critic_grad_leak):
            with torch.no_grad():
                return float(self._actor_loss(batch))  # logged only; nothing is stepped
        loss = self._actor_loss(batch)
        if opts.critic_grad_leak:
            # Release behaviour: backward reaches psi and the critic optimiser applies it.
            self.actor_opt.zero_grad(set_to_none=True)
            self._step(self.critic_opt, self.critic, loss)
            if opts.train_actor:
                self._clip_and_step(self.actor_opt, self.actor)
        else:
            params = list(self.actor.parameters())
            grads = torch.autograd.grad(loss, params)  # psi receives no gradient at all
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            self._clip_and_step(self.actor_opt, self.actor)
        self.actor_opt.zero_grad(set_to_none=True)  # release: actor grads never applied
        return float(loss.detach())

    def _step(self, opt: torch.optim.Optimizer, net: nn.Module, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self._clip_and_step(opt, net)

    def _clip_and_step(self, opt: torch.optim.Optimizer, net: nn.Module) -> None:
        max_norm = self.opts.grad_clip if self.opts.grad_clip > 0 else float("inf")
        norm = nn.utils.clip_grad_norm_(net.parameters(), max_norm)
        if torch.isfinite(norm):
            opt.step()
        else:  # a non-finite gradient never reaches the network's parameters
            self.skipped_steps += 1
        opt.zero_grad(set_to_none=True)  # no stale gradients between steps

    @torch.no_grad()
    def _soft_update(self) -> None:
        tau = self.opts.tau
        for target, online in ((self.actor_target, self.actor), (self.critic_target, self.critic)):
            for pt, p in zip(target.parameters(), online.parameters(), strict=True):
                pt.lerp_(p, tau)

    @torch.no_grad()
    def hard_update_targets(self) -> None:
        """phi- <- phi, psi- <- psi (end of warm-up)."""
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, state: np.ndarray, exploration: str = "none", sigma: float = 0.0) -> np.ndarray:
        """Mixture (K,) float64 for ``state``: actor, exploration, clamp >= 0, renormalise."""
        s = torch.as_tensor(np.asarray(state, dtype=np.float32)).unsqueeze(0)
        with _threads(self.opts.agent_threads):
            self.actor.eval()
            raw = self.actor.raw(s)[0].double()
            self.actor.train()
        if exploration == "logit_gaussian" and sigma > 0:
            noise = torch.randn(self.num_domains, generator=self.generator, dtype=torch.float64)
            # Unbounded: log a + N(0, sigma^2). Bounded: the noise enters before the tanh, so
            # the executed mixture stays within the bound too.
            raw = raw + sigma * noise
        w = torch.softmax(self.actor.logits_from_raw(raw), dim=-1)
        if exploration == "release":
            u = torch.rand(self.num_domains, generator=self.generator, dtype=torch.float64)
            w = w - RELEASE_NOISE * u
        w = w.clamp_min(0.0)
        total = float(w.sum())
        if not total > 0:  # cannot happen for K < 1000; keep the boundary valid anyway
            return np.full(self.num_domains, 1.0 / self.num_domains)
        return (w / total).numpy()

    def drift(self) -> tuple[float, float]:
        """(||phi - phi_0||, ||psi - psi_0||): exactly 0 for a network never stepped."""
        return (
            float(torch.linalg.vector_norm((_flat(self.actor) - self._actor0).double())),
            float(torch.linalg.vector_norm((_flat(self.critic) - self._critic0).double())),
        )

    # ------------------------------------------------------------------ state
    def actor_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.actor.state_dict().items()}

    def load_actor_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load actor weights (e.g. from a policy file); targets and phi_0 follow."""
        self.actor.load_state_dict(state)
        self.actor_target.load_state_dict(state)
        self._actor0 = _flat(self.actor)

    def critic_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.critic.state_dict().items()}

    def load_critic_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load critic weights (fine-tuning from a policy file); target and psi_0 follow."""
        self.critic.load_state_dict(state)
        self.critic_target.load_state_dict(state)
        self._critic0 = _flat(self.critic)

    def _networks(self) -> Iterator[tuple[str, nn.Module]]:
        yield from (
            ("actor", self.actor),
            ("critic", self.critic),
            ("actor_target", self.actor_target),
            ("critic_target", self.critic_target),
        )

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            name: {k: v.detach().clone() for k, v in net.state_dict().items()}
            for name, net in self._networks()
        }
        state.update(
            actor_opt=copy.deepcopy(self.actor_opt.state_dict()),
            critic_opt=copy.deepcopy(self.critic_opt.state_dict()),
            generator=self.generator.get_state(),
            buffer=self.buffer.state_dict(),
            actor_init=self._actor0.clone(),
            critic_init=self._critic0.clone(),
            updates=self.updates,
            skipped_steps=self.skipped_steps,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self._networks():
            net.load_state_dict(state[name])
        self.actor_opt.load_state_dict(copy.deepcopy(state["actor_opt"]))
        self.critic_opt.load_state_dict(copy.deepcopy(state["critic_opt"]))
        self.generator.set_state(state["generator"].clone())
        self.buffer.load_state_dict(state["buffer"])
        self._actor0 = state["actor_init"].clone()
        self._critic0 = state["critic_init"].clone()
        self.updates = int(state["updates"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
