"""The Mixer's policy update: numpy's BLAS held to one thread while a policy learns."""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_info

from mixlab.mixing.base import Feedback, PolicyBase
from mixlab.train.distributed import DistContext
from mixlab.train.mixer import Mixer


class BlasProbe(PolicyBase):
    """Records how many threads numpy's BLAS may use while ``update`` runs."""

    def __init__(self) -> None:
        self.domains = ("a", "b")
        self.seen: list[int] = []

    def weights(self) -> np.ndarray:
        return np.array([0.5, 0.5])

    def update(self, feedback: Feedback) -> None:
        self.seen += [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Sink:
    def set_weights(self, weights: np.ndarray) -> None:
        self.weights = weights


def test_policy_updates_run_with_one_blas_thread() -> None:
    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    policy = BlasProbe()
    mixer = Mixer(policy, Sink(), dist=DistContext(), update_every=1, total_steps=3)
    sums = {"loss_sum": np.ones(2), "token_count": np.ones(2), "microbatch_count": np.ones(2)}
    mixer.step(1, sums)
    assert policy.seen and set(policy.seen) == {1}  # numpy's BLAS is loaded and held to 1
    assert blas_threads() == before  # and given back after the update
