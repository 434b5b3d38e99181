"""Online domain mixing inside torchtitan 0.3.0 (installed beside mixlab, see the README).

torchtitan trains on static data; none of its loaders changes the mixture from the loss. This
module plugs mixlab's sampler and a mixing policy into a torchtitan run without editing
torchtitan, through its ``Configurable`` components, and closes the loop with the *same*
:class:`~mixlab.train.mixer.Mixer` that ``mixlab train`` and the other adapters use::

    MixtureDataLoader   (Trainer.Config.dataloader)  draws each step's micro-batches from a
                        mixlab shard store with the current weights (MixtureSampler): windows
                        of seq_len + 1 tokens, yielded as ({"input", "domain_id"}, labels)
    MixtureLoss         (Trainer.Config.loss)        token-sum cross-entropy / global valid
                        tokens (torchtitan's normalisation), plus detached per-domain loss
                        sums and token counts of every micro-batch
    MixingTrainer       (a Trainer with its own Config: ``mixing`` section)
        post_dataloading_process: pops "domain_id" before the model sees the batch
        train_step: super().train_step(), then Mixer.step(step, per-domain sums):
            sums -> all_reduce over the data-parallel ranks -> policy.update on rank 0
            -> epoch caps -> weights broadcast -> the loader draws step t + 1 with them
        state_dict: the mixture and rank 0's policy ride in torchtitan's "train_state"

So every rank trains step ``t + 1`` on bit-identical weights, and a run resumed from a
torchtitan (DCP) checkpoint continues the mixture exactly: the loader keeps the sampler state
under a rank-specific key (``dp_rank_<r>``, as torchtitan's own loader does, since DCP keeps one
copy per key), the trainer keeps the weights (identical on every rank) and rank 0's policy
state (only rank 0 updates the policy; other ranks use the broadcast weights).

Run (``--module`` names this module, ``--config`` one of its config functions or your own
that calls :func:`mixing_config` on any stock ``Trainer.Config``)::

    torchrun --nproc_per_node=8 -m torchtitan.train \\
        --module mixlab.integrations.torchtitan --config llama3_debugmodel_mixing \\
        --mixing.store shards/ --mixing.policy odm --mixing.sampling homogeneous \\
        --training.steps 1000 --checkpoint.enable

Policies: every registered policy whose feedback is per-domain losses (``odm``,
``odm-smoothed``, static ones), ``doremi-online``, whose frozen reference is a model trained
by ``mixlab train`` on the same store (``--mixing.options '{"doremi": {"reference":
"runs/ref"}}'``): it scores each micro-batch on every rank, as in ``mixlab train``, and
``acodm`` (all its modes and variants). With the mixlab variant's default ``reward: loss`` it
needs the per-domain losses only; with a gradient reward or the paper state AC-ODM looks inside
the model the way ``mixlab train`` does (:class:`~mixlab.train.probes.ModelProbes` on
torchtitan's blocks, found by role: ``feed_forward.w2`` / ``attention.wo``): per-domain
gradients of the reward layers come from hooks in the ordinary backward of the mixed
micro-batches (no extra backward), scaled back by torchtitan's global token count and summed over
ranks; the held-out reward's small batch of validation windows goes forward (and backward to
the hooked outputs only) at the start of the step, before any micro-batch, so at the same
parameters as the step's training gradients; every rank computes it, also under FSDP (the
sharded blocks gather their weights as in any forward). The paper state's weight norms are
gathered after the optimiser step and their references ride in the checkpoint. ``proxy_train``
writes its policy file (rank 0) at every checkpoint interval and at the last step. Compiled
models are refused when the capture is needed (its hooks sit inside the blocks); activation
checkpointing works (recomputed forwards are not captured twice).

Epoch caps (``--mixing.options '{"max_epochs": 4}'``, one number or per-domain) bound every
weight at ``E_d N_d / B`` with ``B = steps x global batch x seq_len``, as in ``mixlab train``.

Knobs (``MixingTrainer.Config.mixing``, CLI ``--mixing.<name>``): ``store`` (the mixlab shard
store; its tokenizer replaces ``tokenizer``), ``policy``, ``sampling`` (``mixed``,
``stratified`` or ``homogeneous``), ``seed`` (sampling seed), ``options`` (JSON object with a
recipe's ``mixing:`` keys, e.g. ``{"odm": {"warmup_steps": 0}, "update_every": 2}``) and
``log`` (write ``mixing.rank<r>.jsonl`` with each step's weights and per-domain sums to
``dump_folder``). Mixing values also go to torchtitan's metric logger (``mix/weight/<d>``,
``domain/<d>/train_loss``).

Scope: data parallelism only, replicated (``data_parallel_replicate_degree``) or sharded
(FSDP, ``data_parallel_shard_degree``), with gradient accumulation. Pipeline, tensor, context
and expert parallelism are refused: with pipeline parallelism the loss runs inside the schedule
on the last stage only, and the others split a sequence across ranks. The loss computes full
logits (no ``ChunkedLossWrapper``), so memory grows with the vocabulary.

torchtitan 0.3.0 with torch 2.13 calls ``torch.distributed.set_timeout`` after the first step,
which torch 2.13 does not have (it has the private ``_set_pg_timeout``). That is a
torchtitan/torch mismatch that stops stock torchtitan runs too, so this module leaves torch
alone; see the README ("Online mixing inside torchtitan") for the one-line shim.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError, ResumeError
from mixlab.integrations.controller import build_adapter_policy, check_saved_state
from mixlab.mixing.base import Feedback
from mixlab.mixing.budget import natural_weights
from mixlab.model.losses import per_domain_sums
from mixlab.sampling.sampler import MODES, MixtureSampler
from mixlab.train.distributed import DistContext
from mixlab.train.mixer import Mixer
from mixlab.train.probes import ModelProbes
from mixlab.train.reference import ReferenceScorer

try:
    from torchtitan.components.dataloader import BaseDataLoader
    from torchtitan.components.loss import IGNORE_INDEX, BaseLoss
    from torchtitan.components.tokenizer import BaseTokenizer
    from torchtitan.config import CompileConfig
    from torchtitan.trainer import Trainer
except ImportError as exc:  # the extra is not installed
    raise ConfigError(
        "the torchtitan adapter needs torchtitan 0.3.0 and triton (which it imports); "
        "install them with --no-deps so that datasets / huggingface_hub stay as transformers "
        "needs them: see README 'Online mixing inside torchtitan' or run "
        "tests/integrations/verify_torchtitan.py, which builds such a venv"
    ) from exc

logger = logging.getLogger(__name__)

STATE_VERSION = 1
Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------- tokenizer
class StoreTokenizer(BaseTokenizer):
    """The shard store's own tokenizer: the ids the loader yields were made with it."""

    @dataclass(kw_only=True, slots=True)
    class Config(BaseTokenizer.Config):
        store: str = ""
        """the mixlab shard store (set by MixingTrainer from ``mixing.store``)"""

    def __init__(self, config: Config, tokenizer_path: str | None = None) -> None:
        super().__init__()
        self.store = ShardStore(_required_store(config.store))
        self.eos_id = self.store.eos_id
        self._tokenizer: Any = None  # loaded on first encode/decode

    def _tok(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self.store.tokenizer()
        return self._tokenizer

    def encode(self, text: str, *args: Any, **kwargs: Any) -> list[int]:
        return list(self._tok().encode(text).ids)

    def decode(self, ids: list[int], *args: Any, **kwargs: Any) -> str:
        return str(self._tok().decode(ids))

    def get_vocab_size(self) -> int:
        return self.store.vocab_size


# ---------------------------------------------------------------------- data
class MixtureDataLoader(BaseDataLoader):
    """Micro-batches from a mixlab shard store, drawn with the weights in force.

    Each optimiser step draws one :class:`MixtureSampler` step (``grad_accum`` micro-batches of
    ``local_batch_size`` windows of ``seq_len + 1`` tokens on this rank) when its first
    micro-batch is requested, so weights set after step ``t`` drive step ``t + 1``. A window
    ``x`` is yielded as ``({"input": x[:, :-1], "domain_id": (B,)}, x[:, 1:])``.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(BaseDataLoader.Config):
        store: str = ""
        """the mixlab shard store"""
        sampling: str = "mixed"
        """mixed | stratified | homogeneous (one domain per micro-batch)"""
        seed: int = 0
        """sampling seed (domain labels and window orders)"""
        grad_accum: int = 1
        """micro-batches per step on each rank (MixingTrainer sets torchtitan's value)"""
        floor_per_domain: int = 0
        """sequences (micro-batches in homogeneous) of every domain in each step (AC-ODM's)"""

    def __init__(
        self,
        config: Config,
        *,
        dp_world_size: int,
        dp_rank: int,
        tokenizer: BaseTokenizer | None = None,
        seq_len: int,
        local_batch_size: int,
        snapshot_every_n_steps: int | None = None,
    ) -> None:
        self.store = ShardStore(_required_store(config.store))
        self.domains: tuple[str, ...] = tuple(self.store.domains)
        self.dp_rank, self.dp_world_size = dp_rank, dp_world_size
        self._seq_len, self._batch_size = seq_len, local_batch_size
        self._mode, self._seed = config.sampling, config.seed
        natural = natural_weights(self.store.train_tokens_per_domain())
        self.sampler = self._new_sampler(config.grad_accum, config.floor_per_domain, natural)
        self._step_batches: list[dict[str, torch.Tensor]] = []  # the drawn step
        self._consumed = 0  # of its micro-batches
        self._pre_state: dict[str, Any] | None = None  # sampler state before the drawn step

    def _new_sampler(self, grad_accum: int, floor: int, weights: np.ndarray) -> MixtureSampler:
        return MixtureSampler(
            self.store,
            seq_len=self._seq_len + 1,  # inputs and labels are the window shifted by one
            batch_size=self._batch_size,
            grad_accum=grad_accum,
            weights=weights,
            mode=self._mode,
            seed=self._seed,
            rank=self.dp_rank,
            world_size=self.dp_world_size,
            floor_per_domain=floor,
        )

    @property
    def mode(self) -> str:
        return self.sampler.mode

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def grad_accum(self) -> int:
        return self.sampler.grad_accum

    @property
    def tokens_per_step(self) -> int:
        """Tokens the model trains on in one optimiser step over all ranks."""
        s = self.sampler
        return s.batch_size * s.grad_accum * self.dp_world_size * self._seq_len

    def configure(self, grad_accum: int, floor_per_domain: int = 0) -> None:
        """Match torchtitan's gradient accumulation and the policy's per-domain floor (only
        before the first draw)."""
        s = self.sampler
        if (grad_accum, floor_per_domain) == (s.grad_accum, s.floor_per_domain):
            return
        if s.step:
            raise ConfigError("MixtureDataLoader: configure() only before the first step")
        self.sampler = self._new_sampler(grad_accum, floor_per_domain, s.weights())

    def weights(self) -> np.ndarray:
        return self.sampler.weights()

    def set_weights(self, weights: np.ndarray) -> None:
        """Draw from the next step on with ``weights`` (the Mixer's sink)."""
        self.sampler.set_weights(weights)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            if self._consumed >= len(self._step_batches):
                self._pre_state = self.sampler.state_dict()
                self._step_batches = self.sampler.next_step()
                self._consumed = 0
            mb = self._step_batches[self._consumed]
            self._consumed += 1
            window = mb["input_ids"]
            yield {"input": window[:, :-1], "domain_id": mb["domain_id"]}, window[:, 1:]

    # rank-specific state under a rank-specific key: DCP keeps one copy per key
    def state_dict(self) -> dict[str, Any]:
        mid_step = 0 < self._consumed < len(self._step_batches)
        state = {
            "version": STATE_VERSION,
            # mid-step (not at torchtitan's checkpoints): redraw the step, skip what was used
            "sampler": self._pre_state if mid_step else self.sampler.state_dict(),
            "consumed": self._consumed if mid_step else 0,
            "weights": self.sampler.weights().tolist(),
        }
        return {f"dp_rank_{self.dp_rank}": pickle.dumps(state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        key = f"dp_rank_{self.dp_rank}"
        if key not in state_dict:
            raise ResumeError(
                f"the checkpoint's data loader state has no {key!r} (it holds "
                f"{sorted(state_dict)}); resume with the data-parallel degree it was saved with"
            )
        state = pickle.loads(state_dict[key])
        check_saved_state(state, "the MixtureDataLoader state", STATE_VERSION)
        self.sampler.load_state_dict(state["sampler"])
        self._step_batches, self._consumed = [], 0
        if state["consumed"]:
            self._pre_state = self.sampler.state_dict()
            self._step_batches = self.sampler.next_step()
            self._consumed = int(state["consumed"])
        self.sampler.set_weights(state["weights"])


# ---------------------------------------------------------------------- loss
class MixtureLoss(BaseLoss):
    """Token-sum cross-entropy / global valid tokens, plus per-domain feedback sums.

    The returned loss is torchtitan's (``sum_j l_j / global_valid_tokens``, gradients as with
    its ``CrossEntropyLoss``). When :class:`MixingTrainer` has announced the micro-batch's
    ``domain_id``, the detached per-token losses are summed per domain (``loss_sum``,
    ``token_count``, ``microbatch_count``) and, with a reference model (DoReMi), its clipped
    excess sums. Batches without a domain (torchtitan's validator) only return the loss.
    """

    @dataclass(kw_only=True, slots=True)
    class Config(BaseLoss.Config):
        pass

    def __init__(self, config: Config, *, compile_config: CompileConfig | None = None) -> None:
        self.num_domains = 0
        self.homogeneous = False
        self.reference: ReferenceScorer | None = None
        self.domain_id: torch.Tensor | None = None  # the next micro-batch's, then cleared
        self.window: torch.Tensor | None = None  # its full token windows (for the reference)
        self.sums: dict[str, torch.Tensor] = {}
        # the step's loss normaliser (torchtitan's global_valid_tokens), kept on its device
        self.global_tokens: torch.Tensor | None = None

    def bind(self, num_domains: int, mode: str, reference: ReferenceScorer | None) -> None:
        self.num_domains = num_domains
        self.homogeneous = mode == "homogeneous"
        self.reference = reference
        self.reset()

    def reset(self) -> None:
        """Zero the sums (start of an optimiser step)."""
        keys = ["loss_sum", "token_count", "microbatch_count"]
        if self.reference is not None:
            keys += ["excess_sum", "ref_loss_sum", "clipped_count"]
        self.sums = {k: torch.zeros(self.num_domains, dtype=torch.float64) for k in keys}

    def feedback(self) -> dict[str, np.ndarray]:
        """This rank's sums of the step, as the Mixer takes them."""
        out = {k: v.numpy().copy() for k, v in self.sums.items()}
        out["microbatch_count"] = out["microbatch_count"].astype(np.int64)
        return out

    def __call__(
        self,
        pred: torch.Tensor,
        labels: torch.Tensor,
        global_valid_tokens: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        tok = F.cross_entropy(
            pred.flatten(0, 1).float(),
            labels.flatten(),
            reduction="none",
            ignore_index=IGNORE_INDEX,
        ).view(labels.shape)
        if self.domain_id is not None:
            self._observe(tok.detach(), labels, self.domain_id)
            self.domain_id = self.window = None
            if global_valid_tokens is not None:
                self.global_tokens = global_valid_tokens.detach()
        loss = tok.sum()
        if global_valid_tokens is not None:
            loss = loss / global_valid_tokens
        return loss, {}

    def _observe(self, tok: torch.Tensor, labels: torch.Tensor, domain_id: torch.Tensor) -> None:
        k = self.num_domains
        ids = domain_id.to(tok.device, torch.int64)
        loss_sum, count = per_domain_sums(tok, labels != IGNORE_INDEX, ids, k)
        self.sums["loss_sum"] += loss_sum.to("cpu", torch.float64)
        self.sums["token_count"] += count.to("cpu", torch.float64)
        cpu_ids = ids.cpu()
        if self.homogeneous:
            self.sums["microbatch_count"][int(cpu_ids[0])] += 1
        else:
            self.sums["microbatch_count"] += torch.bincount(cpu_ids, minlength=k).double()
        if self.reference is not None:
            assert self.window is not None, "MixingTrainer sets the window with the domain"
            batch = {"input_ids": self.window, "labels": self.window, "domain_id": ids}
            scored = self.reference.score(batch, tok, k, contextlib.nullcontext())
            for key, value in scored.items():
                self.sums[key] += value.to("cpu", torch.float64)


# ---------------------------------------------------------------------- trainer
@dataclass(kw_only=True, slots=True)
class MixingSection:
    """``MixingTrainer.Config.mixing`` (CLI ``--mixing.<field>``)."""

    store: str = ""
    """the mixlab shard store to train on (its tokenizer is used)"""
    policy: str = "odm"
    """a registered mixlab mixing policy (odm, odm-smoothed, doremi-online, natural, ...)"""
    sampling: str = "mixed"
    """mixed | stratified | homogeneous (one domain per micro-batch)"""
    seed: int = 0
    """sampling seed"""
    options: str = "{}"
    """JSON object with a mixlab recipe's mixing: keys, e.g. {"odm": {"warmup_steps": 0}}"""
    log: bool = True
    """write mixing.rank<r>.jsonl (weights and per-domain sums per step) to dump_folder"""


class MixingTrainer(Trainer):
    """A torchtitan ``Trainer`` whose data mixture follows a mixlab policy, step by step."""

    @dataclass(kw_only=True, slots=True)
    class Config(Trainer.Config):
        mixing: MixingSection = field(default_factory=MixingSection)

    def __init__(self, config: Config) -> None:
        section = config.mixing
        _check_parallelism(config)
        options = _parse_options(section.options)
        if section.sampling not in MODES:
            raise ConfigError(f"mixing.sampling: {section.sampling!r} is not one of {MODES}")
        # the ids come from the store, so the store decides the data, tokenizer and loss
        config.tokenizer = StoreTokenizer.Config(store=section.store)
        config.dataloader = MixtureDataLoader.Config(
            store=section.store, sampling=section.sampling, seed=section.seed
        )
        config.loss = MixtureLoss.Config()
        super().__init__(config)
        loader, loss = self.dataloader, self.loss_fn
        assert isinstance(loader, MixtureDataLoader) and isinstance(loss, MixtureLoss)
        self.mixture_loader, self.mixture_loss = loader, loss
        vocab = getattr(self.model_config, "vocab_size", None)
        if isinstance(vocab, int) and vocab < loader.store.vocab_size:
            raise ConfigError(
                f"mixing.store={section.store}: the store's vocabulary has "
                f"{loader.store.vocab_size} ids but the model's vocab_size is {vocab}; "
                "use a model with vocab_size >= the store's"
            )
        self.policy_name = section.policy
        loader.configure(self.gradient_accumulation_steps)  # the budget counts accumulation
        self.policy, update_every, caps = build_adapter_policy(
            section.policy,
            loader,
            total_steps=config.training.steps,
            options=options,
            tokens_per_step=loader.tokens_per_step,
        )
        needs = self.policy.needs
        loader.configure(self.gradient_accumulation_steps, needs.floor_per_domain)
        self.probes: ModelProbes | None = None
        if needs.looks_inside_model:
            _check_probe_support(config, section.policy)
            self.probes = ModelProbes(
                needs,
                self.model_parts[0],
                len(loader.domains),
                store=loader.store,
                seq_len=config.training.seq_len,
                forward=_titan_logits,
            )
        self.policy_file: Path | None = None
        if needs.exports_policy_file:
            self.policy_file = Path(
                needs.policy_file or Path(config.dump_folder) / f"policy.{section.policy}.pt"
            )
        reference = None
        if self.policy.needs.reference is not None:
            reference = ReferenceScorer(
                self.policy.needs.reference,
                loader.store,
                config.training.seq_len + 1,
                self.device,
            )
        loss.bind(len(loader.domains), loader.mode, reference)
        running = torch.distributed.is_available() and torch.distributed.is_initialized()
        ctx = (
            DistContext(
                torch.distributed.get_rank(), torch.distributed.get_world_size(), device=self.device
            )
            if running
            else DistContext(device=self.device)
        )
        self.mixer = Mixer(
            self.policy,
            loader,
            dist=ctx,
            update_every=update_every,
            total_steps=config.training.steps,
            caps=caps,
        )
        self.mixing_log = (
            Path(config.dump_folder) / f"mixing.rank{ctx.rank}.jsonl" if section.log else None
        )
        logger.info(
            "mixlab: mixing with %s over %s (update every %d steps)",
            section.policy,
            ", ".join(loader.domains),
            update_every,
        )

    # the domain is mixing bookkeeping, not a model input
    def post_dataloading_process(
        self, input_dict: dict[str, torch.Tensor], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        domain_id = input_dict.pop("domain_id", None)
        if domain_id is not None:
            self.mixture_loss.domain_id = domain_id
            if self.probes is not None:  # per-domain gradient hooks see this micro-batch
                self.probes.begin({"domain_id": domain_id})
            if self.mixture_loss.reference is not None:
                self.mixture_loss.window = torch.cat([input_dict["input"], labels[:, -1:]], 1)
        return super().post_dataloading_process(input_dict, labels)

    def train_step(self, data_iterator: Iterator[Batch]) -> None:
        self.mixture_loss.reset()
        heldout: dict[str, Any] = {}
        if self.probes is not None:  # AC-ODM's held-out batch, at this step's parameters
            heldout = self.probes.measure_heldout(self.model_parts[0], self.step)
        super().train_step(data_iterator)
        sums: dict[str, Any] = self.mixture_loss.feedback()
        if self.probes is not None:  # gradients of this step, weight norms after it
            scale = self.mixture_loss.global_tokens
            sums.update(
                self.probes.measure(1.0 if scale is None else float(scale), sums["token_count"])
            )
            sums.update(heldout)
        feedback = self.mixer.step(self.step, sums)  # <- the mixture learns from this step
        self._log_mixing(feedback)
        if self.policy_file is not None and self.mixer.dist.is_main:
            interval = self.config.checkpoint.interval
            if self.step == self.config.training.steps or self.step % interval == 0:
                provenance = {"seed": self.mixture_loader.seed, "engine": "torchtitan"}
                self.policy.save_policy_file(self.policy_file, provenance)

    def _log_mixing(self, feedback: Feedback) -> None:
        domains, mean_loss = self.mixture_loader.domains, feedback.mean_loss()
        values = {
            f"mix/weight/{d}": float(w) for d, w in zip(domains, self.mixer.weights, strict=True)
        }
        for d, x in zip(domains, mean_loss, strict=True):
            if np.isfinite(x):
                values[f"domain/{d}/train_loss"] = float(x)
        if self.mixer.dist.is_main:  # only rank 0's policy learns
            values.update({f"mix/{k}": v for k, v in self.policy.log_values().items()})
        self.metrics_processor.logger.log(values, self.step)
        if self.mixing_log is not None:
            record = {
                "step": self.step,
                "weights": self.mixer.weights.tolist(),
                # the (K,) sums and extras (AC-ODM: grad_count, heldout_loss, ...); the
                # (K, P) gradient sums are too big for a log line
                **{
                    k: np.asarray(v).tolist()
                    for k, v in {**self.mixer.sums, **feedback.extras}.items()
                    if np.ndim(v) == 1
                },
            }
            if "grad_sum" in self.mixer.sums:  # AC-ODM: per-domain gradient norms instead
                record["grad_sum_norm"] = np.linalg.norm(
                    self.mixer.sums["grad_sum"], axis=1
                ).tolist()
            with open(self.mixing_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    # the mixture (same on every rank) and rank 0's policy ride in "train_state"
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["mixlab"] = pickle.dumps(
            {
                "version": STATE_VERSION,
                "policy_name": self.policy_name,
                "weights": self.mixer.weights.tolist(),
                # weight-norm references (AC-ODM paper state): the same on every rank
                "probes": {} if self.probes is None else self.probes.state_dict(),
            }
        )
        if self.mixer.dist.is_main:
            state["mixlab_policy"] = pickle.dumps(self.policy.state_dict())
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "mixlab" not in state_dict:
            raise ResumeError(
                "the torchtitan checkpoint has no mixlab state (train_state['mixlab']); it was "
                "not written by MixingTrainer — start the mixture fresh in a new dump_folder"
            )
        mine = pickle.loads(state_dict["mixlab"])
        check_saved_state(
            mine, "the checkpoint's mixlab state (--mixing.policy)", STATE_VERSION, self.policy_name
        )
        if self.mixer.dist.is_main:
            self.policy.load_state_dict(pickle.loads(state_dict["mixlab_policy"]))
        self.mixer.weights = np.asarray(mine["weights"], dtype=np.float64)
        self.mixture_loader.set_weights(self.mixer.weights)
        if self.probes is not None:
            self.probes.load_state_dict(mine.get("probes") or {})

    def close(self) -> None:
        if self.probes is not None:
            self.probes.close()
        super().close()


# ---------------------------------------------------------------------- configs
def mixing_config(
    base: Trainer.Config,
    *,
    store: str = "",
    policy: str = "odm",
    sampling: str = "mixed",
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> MixingTrainer.Config:
    """``base`` (any stock ``Trainer.Config``) as a :class:`MixingTrainer` config."""
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Trainer.Config)}
    section = MixingSection(
        store=store,
        policy=policy,
        sampling=sampling,
        seed=seed,
        options=json.dumps(options or {}),
    )
    return MixingTrainer.Config(**fields, mixing=section)


def llama3_debugmodel_mixing() -> MixingTrainer.Config:
    """torchtitan's ``llama3_debugmodel`` trained with online mixing (set ``--mixing.store``)."""
    from torchtitan.models.llama3.config_registry import llama3_debugmodel

    return mixing_config(llama3_debugmodel())


# ---------------------------------------------------------------------- checks
def _required_store(store: str) -> str:
    if not store:
        raise ConfigError(
            "mixing.store: no mixlab shard store given; pass --mixing.store <folder made by "
            "`mixlab prepare`>"
        )
    return store


def _parse_options(text: str) -> dict[str, Any]:
    try:
        options = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"mixing.options: not valid JSON ({exc}): {text!r}") from exc
    if not isinstance(options, dict):
        raise ConfigError(f"mixing.options: must be a JSON object, got {text!r}")
    for key in ("name", "sampling"):
        if key in options:
            raise ConfigError(
                f"mixing.options: set {key!r} with --mixing.{'policy' if key == 'name' else key}"
            )
    return options


def _check_parallelism(config: Trainer.Config) -> None:
    p = config.parallelism
    other = {
        "pipeline_parallel_degree": p.pipeline_parallel_degree,
        "tensor_parallel_degree": p.tensor_parallel_degree,
        "context_parallel_degree": p.context_parallel_degree,
        "expert_parallel_degree": p.expert_parallel_degree,
    }
    used = {k: v for k, v in other.items() if v != 1}
    if used:
        raise ConfigError(
            f"parallelism: online mixing supports data parallelism only (replicate or FSDP); "
            f"got {used}. Pipeline parallelism computes the loss inside its schedule on the "
            "last stage, and tensor/context/expert parallelism split what the loader yields; "
            "set these degrees to 1"
        )


def _check_probe_support(config: Trainer.Config, policy: str) -> None:
    compile_cfg = config.compile
    if compile_cfg.enable and "model" in compile_cfg.components:
        raise ConfigError(
            f"mixing.policy={policy!r} captures per-domain gradients with hooks inside the "
            "transformer blocks, which a compiled model skips; drop 'model' from "
            "--compile.components (or --compile.no-enable) for this policy"
        )


def _titan_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """torchtitan's decoders take the token ids and return the logits themselves."""
    logits = model(input_ids)
    assert isinstance(logits, torch.Tensor)
    return logits
