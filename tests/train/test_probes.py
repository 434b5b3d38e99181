import numpy as np
import pytest
import torch

from mixlab.train.probes import WeightNormTracker


@pytest.mark.parametrize("reference", ["previous", "first"])
def test_weight_norm_tracker(reference: str) -> None:
    gen = torch.Generator().manual_seed(0)
    w = [torch.randn(4, 3, generator=gen), torch.randn(2, 5, generator=gen)]
    tracker = WeightNormTracker(reference)
    norms, diffs = tracker.measure(w)
    np.testing.assert_allclose(norms, [float(m.norm()) for m in w], rtol=1e-6)
    assert np.array_equal(diffs, np.zeros(2))
    w1 = [m.clone() for m in w]
    w2 = [m + 0.1 for m in w]
    _, diffs = tracker.measure(w2)
    np.testing.assert_allclose(
        diffs, [float((a - b).norm()) for a, b in zip(w2, w1, strict=True)], rtol=1e-6
    )
    saved = tracker.state_dict()
    w3 = [m * 2 for m in w2]
    _, d3 = tracker.measure(w3)
    ref = w2 if reference == "previous" else w1
    np.testing.assert_allclose(
        d3, [float((a - b).norm()) for a, b in zip(w3, ref, strict=True)], rtol=1e-6
    )
    fresh = WeightNormTracker(reference)
    fresh.load_state_dict(saved)
    np.testing.assert_array_equal(fresh.measure(w3)[1], d3)
