"""Measurements inside the model that some mixing policies need in their Feedback (AC-ODM).

Most policies learn from per-domain losses alone. A policy that needs more says so in its
:class:`~mixlab.mixing.base.PolicyNeeds` (``policy.needs``), and :class:`ModelProbes` does it:

* ``needs.gradients`` (blocks, role): per-domain gradient sums of those blocks' weight matrices,
  captured in the ordinary backward pass of the mixed batch
  (:class:`~mixlab.model.grad_capture.DomainGradCapture`). Feedback gets ``grad_sum`` (K, P),
  the sum of per-token gradients, and ``extras["grad_count"]`` = the domain's target tokens,
  so ``grad_sum[i] / grad_count[i]`` is domain i's mean gradient.
* ``needs.heldout_gradients`` (every k, n windows): at steps 1, 1 + k, ... one extra forward
  of n validation windows per domain (:class:`HeldoutProbe`: walking back from the *end* of
  each validation split, so the first captures are disjoint from the evaluation's windows when
  the split is longer than ``eval.max_tokens_per_domain``), and a backward to the hooked
  layers' outputs only (``torch.autograd.grad``: no parameter gradient is computed or changed,
  the layers below the lowest hooked one are skipped). A second :class:`DomainGradCapture` on
  the same matrices groups it by domain. Feedback gets ``extras["heldout_grad_sum"]`` (K, P),
  ``["heldout_grad_count"]`` (tokens) and ``["heldout_loss"]`` (K,) at those steps. It runs
  before the optimiser update, so both gradients are taken at the same parameters. Every rank
  computes the same batch (the values are not summed over ranks); FSDP is not supported.
  With ``losses_only`` (AC-ODM's ``progress_loss: heldout``) the windows are the same at every
  capture, spread evenly over the unscored text (so they come from several documents), and
  there is one forward without gradients: only ``heldout_loss`` and the counts.
* ``needs.weight_norms`` (depth points): Frobenius norms of the MLP down-projections at those
  relative depths, measured after the optimiser step, and their change against a reference
  copy (:class:`WeightNormTracker`; Feedback ``param_norms`` and
  ``extras["param_diff_norms"]``). The reference copies are model state, so they live here and
  in the trainer's checkpoint (``probes``), never in a policy.

Blocks and matrices are found by role (:mod:`mixlab.model.layers`), so GPT-NeoX and Llama
models (and most other HF decoders) work alike. :meth:`ModelProbes.for_needs` returns None
when a policy needs none of this, and the loop then does no extra work at all.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mixlab.errors import ConfigError, DataError
from mixlab.eval.perplexity import ValidationSource, evaluated_tokens, validation_windows
from mixlab.mixing.acodm.reward import select_reward_blocks
from mixlab.mixing.acodm.state import select_depth_blocks
from mixlab.mixing.base import HeldoutGradientNeeds, PolicyNeeds
from mixlab.model.grad_capture import DomainGradCapture
from mixlab.model.layers import decoder_blocks, role_modules
from mixlab.model.losses import token_losses
from mixlab.train.distributed import full_tensor

logger = logging.getLogger(__name__)

LogitsFn = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
"""(model, input_ids (B, L)) -> logits (B, L, V): how the held-out batch goes through the model."""


def hf_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """A Hugging Face causal LM's logits (the default :data:`LogitsFn`)."""
    return model(input_ids=input_ids, use_cache=False).logits


class ModelProbes:
    """Gradient capture and weight-norm tracking for one (policy needs, model) pair."""

    def __init__(
        self,
        needs: PolicyNeeds,
        model: torch.nn.Module,
        num_domains: int,
        *,
        store: ValidationSource | None = None,
        seq_len: int = 0,
        forward: LogitsFn = hf_logits,
        reserved_tokens: int | None = 0,
    ) -> None:
        """``store`` and ``seq_len`` give the held-out windows (``needs.heldout_gradients``),
        ``reserved_tokens`` the validation tokens the evaluation reads (never used for them;
        :class:`HeldoutProbe`), ``forward`` how they go through the model (torchtitan's
        models return bare logits)."""
        n_layers = len(decoder_blocks(model))
        self.capture: DomainGradCapture | None = None
        if needs.gradients is not None:
            blocks = select_reward_blocks(n_layers, needs.gradients.blocks)
            modules = role_modules(model, needs.gradients.role, blocks)
            self.capture = DomainGradCapture(modules, num_domains)
        self.heldout: HeldoutProbe | None = None
        if needs.heldout_gradients is not None:
            if store is None:
                raise ValueError("ModelProbes: held-out gradients need the store's val split")
            self.heldout = HeldoutProbe(
                needs.heldout_gradients, model, store, seq_len, forward, reserved_tokens
            )
        self.tracked: list[torch.nn.Linear] = []  # modules, not weights: FSDP swaps params
        self.tracker: WeightNormTracker | None = None
        if needs.weight_norms is not None:
            points = needs.weight_norms.depth_points
            self.tracked = role_modules(model, "mlp_down", select_depth_blocks(n_layers, points))
            self.tracker = WeightNormTracker(needs.weight_norms.delta_reference)

    @classmethod
    def for_needs(
        cls,
        needs: PolicyNeeds,
        model: torch.nn.Module,
        num_domains: int,
        *,
        store: ValidationSource | None = None,
        seq_len: int = 0,
        forward: LogitsFn = hf_logits,
        reserved_tokens: int | None = 0,
    ) -> ModelProbes | None:
        if not needs.looks_inside_model:
            return None
        return cls(
            needs,
            model,
            num_domains,
            store=store,
            seq_len=seq_len,
            forward=forward,
            reserved_tokens=reserved_tokens,
        )

    def measure_heldout(
        self,
        model: torch.nn.Module,
        step: int,
        autocast: contextlib.AbstractContextManager[Any] | None = None,
    ) -> dict[str, Any]:
        """At the held-out steps, the held-out fields (and ``heldout_seconds``); else {}.

        Call after the step's backward and before ``optimizer.step()``, with the unwrapped
        module (DDP's ``.module``); ``step`` is the step being trained (1-based).
        """
        if self.heldout is None or not self.heldout.needs.due(step):
            return {}
        if self.capture is not None:
            self.capture.stop()  # the training capture must not see this pass
        return self.heldout.measure(model, step, autocast)

    @property
    def capture_seconds(self) -> float:
        """Seconds spent in the gradient hooks since the last :meth:`measure`."""
        return 0.0 if self.capture is None else self.capture.seconds

    def begin(self, batch: dict[str, torch.Tensor]) -> None:
        """Call before each micro-batch's forward pass."""
        if self.capture is not None:
            self.capture.begin(batch["domain_id"])

    def measure(self, loss_scale_inverse: float, token_count: np.ndarray) -> dict[str, np.ndarray]:
        """This step's ``grad_sum``, ``grad_count``, ``param_norms``, ``param_diff_norms``.

        Call after ``optimizer.step()``. ``loss_scale_inverse`` undoes the loss normalisation
        of the backward pass (the step's target tokens for a token-mean loss), so the captured
        sums become sums of per-token gradients. The first two are this rank's and must be
        summed over ranks; the norms are the same on every rank (gathered under FSDP, so
        every rank must call this).
        """
        fields: dict[str, np.ndarray] = {}
        if self.capture is not None:
            fields["grad_sum"] = self.capture.collect(scale=loss_scale_inverse)
            fields["grad_count"] = np.asarray(token_count, dtype=np.float64).copy()
        if self.tracker is not None:
            matrices = [full_tensor(m.weight) for m in self.tracked]
            fields["param_norms"], fields["param_diff_norms"] = self.tracker.measure(matrices)
        return fields

    def state_dict(self) -> dict[str, Any]:
        """The weight-norm references (for an exact resume); empty without tracking."""
        return {} if self.tracker is None else {"weight_tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.tracker is not None and state.get("weight_tracker") is not None:
            self.tracker.load_state_dict(state["weight_tracker"])

    def close(self) -> None:
        """Remove the gradient hooks from the model."""
        if self.capture is not None:
            self.capture.close()
        if self.heldout is not None and self.heldout.capture is not None:
            self.heldout.capture.close()


# losses_only -> (the option that asked for the probe, what to use instead, what a domain
# without held-out windows gets): for the error and the warning below.
_PROBE_USERS: dict[bool, tuple[str, str, str]] = {
    False: (
        "mixing.acodm.reward=heldout_alignment",
        "use mixing.acodm.reward=loss",
        "Their training gradients are still scored against the other domains' held-out gradient",
    ),
    True: (
        "mixing.acodm.progress_loss=heldout",
        "use mixing.acodm.progress_loss=train",
        "Their progress is measured on their training loss instead",
    ),
}


class HeldoutProbe:
    """Per-domain gradients (and losses) of a small batch of validation windows.

    The windows come only from validation text the evaluation never scores: the first
    ``reserved_tokens`` of each split (what ``eval.max_tokens_per_domain`` makes the evaluation
    read, :func:`~mixlab.eval.perplexity.evaluated_tokens`; None = the whole split) are
    skipped, so the reward is not fitted to the text the run is judged on. A domain with less
    than one window of text left is left out of the held-out batch (a warning names it; the
    reward of its training gradient still comes from the other domains' held-out gradient);
    none left is a ConfigError. Capture c (at step 1 + c k) takes ``windows_per_domain``
    windows of ``seq_len`` tokens of the rest, walking backwards from the end of the split by
    ``windows_per_domain`` per capture and wrapping around, so successive captures see
    different text. A split shorter than one window, none of it scored, gives one shorter
    window. Windows of equal length go through the model in one forward; the
    loss is the *sum* of the per-token losses, so ``heldout_grad_sum[d]`` is the sum of domain
    d's per-token gradients and ``heldout_grad_count[d]`` its token count. The windows follow
    from the step alone, so a resumed run sees the same ones.
    """

    def __init__(
        self,
        needs: HeldoutGradientNeeds,
        model: torch.nn.Module,
        store: ValidationSource,
        seq_len: int,
        forward: LogitsFn = hf_logits,
        reserved_tokens: int | None = 0,
    ) -> None:
        self.needs = needs
        self.forward = forward
        domains = tuple(store.domains)
        if not domains:
            raise DataError("held-out gradients: the store has no domains")
        self.num_domains = len(domains)
        self.capture: DomainGradCapture | None = None
        if not needs.losses_only:
            blocks = select_reward_blocks(len(decoder_blocks(model)), needs.blocks)
            self.capture = DomainGradCapture(role_modules(model, needs.role, blocks), len(domains))
            self.capture.record_outputs = True
        # (domain index, its windows) for the domains with unscored validation text.
        self.windows: list[tuple[int, np.ndarray]] = []
        left_out: list[str] = []
        for i, d in enumerate(domains):
            tokens = store.tokens(d, "val")
            total = int(tokens.shape[0])
            skip = (
                0
                if reserved_tokens == 0  # nothing is evaluated from this store (torchtitan)
                else evaluated_tokens(total, seq_len=seq_len, max_tokens=reserved_tokens)
            )
            # A scrap left after the scored windows would be a noisy estimate; an unscored
            # split shorter than one window gives one shorter window.
            if total - skip < (seq_len if skip else 2):
                left_out.append(f"{d} ({total - skip:,} of {total:,} tokens unscored)")
                continue
            rest = tokens[skip:]
            self.windows.append(
                (i, validation_windows(rest, seq_len=seq_len, max_tokens=None, domain=d))
            )
        what = (
            "the whole split (eval.max_tokens_per_domain: null)"
            if reserved_tokens is None
            else f"its first {reserved_tokens:,} tokens (eval.max_tokens_per_domain)"
        )
        user, instead, fallback = _PROBE_USERS[needs.losses_only]
        if not self.windows:
            raise ConfigError(
                f"{user}: no domain has validation text that the evaluation does not "
                f"score (it reads {what}), so the held-out batch would be taken on the text "
                "the run is judged on. Lower eval.max_tokens_per_domain below the validation "
                f"splits, prepare the store with larger validation splits, or {instead}"
            )
        if left_out:
            logger.warning(
                "%s: %s get(s) no held-out windows: the evaluation reads %s. %s; to include "
                "them, lower eval.max_tokens_per_domain or give them larger validation splits",
                user,
                ", ".join(left_out),
                what,
                fallback,
            )

    def batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The (input_ids, domain_id) batches of the capture at ``step``, one per length."""
        n = self.needs.windows_per_domain
        first = ((step - 1) // self.needs.every) * n
        groups: dict[int, tuple[list[np.ndarray], list[int]]] = {}
        for d, windows in self.windows:
            count = windows.shape[0]
            if self.needs.losses_only:  # the same windows every time, spread over the text
                picked = sorted({int(i) for i in np.linspace(0, count - 1, n).round()})
            else:
                picked = sorted({count - 1 - (first + j) % count for j in range(n)})
            rows, ids = groups.setdefault(int(windows.shape[1]), ([], []))
            rows.extend(windows[picked])
            ids.extend([d] * len(picked))
        return [
            (torch.from_numpy(np.stack(rows)), torch.tensor(ids, dtype=torch.int64))
            for rows, ids in groups.values()
        ]

    def measure(
        self,
        model: torch.nn.Module,
        step: int,
        autocast: contextlib.AbstractContextManager[Any] | None = None,
    ) -> dict[str, Any]:
        """Forward the step's batch, backward to the hooked outputs; the held-out fields
        (``losses_only``: the forward without gradients, and no ``heldout_grad_sum``)."""
        start = time.perf_counter()
        device = next(model.parameters()).device
        loss_sum = np.zeros(self.num_domains)
        count = np.zeros(self.num_domains)
        grad_mode = contextlib.nullcontext() if self.capture is not None else torch.no_grad()
        for ids, domain_id in self.batches(step):
            if self.capture is not None:
                self.capture.begin(domain_id)
            ids = ids.to(device)
            with grad_mode, autocast if autocast is not None else contextlib.nullcontext():
                logits = self.forward(model, ids)
            tok = token_losses(logits, ids)  # (B, L-1) fp32
            if self.capture is not None:
                outputs = self.capture.outputs
                self.capture.stop()
                if outputs:
                    torch.autograd.grad(tok.sum(), outputs)  # fills the capture; no param grads
            per_seq = tok.detach().sum(dim=1).double().cpu().numpy()
            np.add.at(loss_sum, domain_id.numpy(), per_seq)
            np.add.at(count, domain_id.numpy(), float(tok.shape[1]))
        loss = np.divide(loss_sum, count, out=np.full(self.num_domains, np.nan), where=count > 0)
        fields: dict[str, Any] = {
            "heldout_grad_count": count,
            "heldout_loss": loss,
            "heldout_seconds": time.perf_counter() - start,
        }
        if self.capture is not None:
            fields["heldout_grad_sum"] = self.capture.collect()
        return fields


class WeightNormTracker:
    """Measures ||W_b||_F and ||W_b - W_b,ref||_F of the D tracked matrices, keeping the refs.

    Call :meth:`measure` once per step after the optimiser update, with the matrices in
    depth-point order. The first call stores the references and reports zero change; later
    calls refresh them every step (``previous``) or never (``first``). Its state (the reference
    copies) belongs in the checkpoint for an exact resume.
    """

    def __init__(self, delta_reference: str = "previous") -> None:
        assert delta_reference in ("previous", "first"), delta_reference
        self.delta_reference = delta_reference
        self._ref: list[torch.Tensor] | None = None

    @torch.no_grad()
    def measure(self, matrices: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(norms (D,), diff_norms (D,)) as float64."""
        current = [m.detach().to(device="cpu", dtype=torch.float64) for m in matrices]
        norms = np.array([float(torch.linalg.vector_norm(m)) for m in current])
        if self._ref is None:
            diffs = np.zeros(len(current))
            self._ref = [m.clone() for m in current]
        else:
            if len(self._ref) != len(current):
                raise ValueError(
                    f"WeightNormTracker: got {len(current)} matrices, the reference has "
                    f"{len(self._ref)}"
                )
            pairs = zip(current, self._ref, strict=True)
            diffs = np.array([float(torch.linalg.vector_norm(m - r)) for m, r in pairs])
            if self.delta_reference == "previous":
                self._ref = [m.clone() for m in current]
        return norms, diffs

    def state_dict(self) -> dict[str, Any]:
        return {
            "delta_reference": self.delta_reference,
            "reference": None if self._ref is None else copy.deepcopy(self._ref),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ref = state["reference"]
        self._ref = None if ref is None else [t.clone() for t in ref]
