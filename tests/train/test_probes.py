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


class _ValStore:
    """A ValidationSource over fixed token arrays: 3 domains, the last one shorter than a window."""

    domains = ("a", "b", "c")

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.val = {
            "a": rng.integers(0, 300, 80),
            "b": rng.integers(0, 300, 48),
            "c": rng.integers(0, 300, 10),
        }

    def tokens(self, domain: str, split: str = "train") -> np.ndarray:
        return self.val[domain]

    def train_tokens_per_domain(self) -> np.ndarray:
        return np.ones(3)


def test_heldout_probe_equals_brute_force_and_rotates() -> None:
    """The held-out pass gives each domain's summed per-token gradient on its windows (one
    backward per domain as brute force), leaves every .grad untouched, and walks backwards
    through the validation split by windows_per_domain per capture."""
    from mixlab.mixing.base import HeldoutGradientNeeds
    from mixlab.model.factory import build_model
    from mixlab.model.layers import role_modules
    from mixlab.model.losses import token_losses
    from mixlab.train.probes import HeldoutProbe

    model = build_model(preset="llama-tiny", vocab_size=300, eos_id=1, max_seq_len=32, seed=0)
    store = _ValStore()
    needs = HeldoutGradientNeeds(every=5, windows_per_domain=2, blocks=(-1,))
    probe = HeldoutProbe(needs, model, store, seq_len=16)
    # a: 5 windows of 16 -> capture 0 takes windows 4, 3; capture 1 (step 6) 2, 1; then 0, 4.
    starts = {
        step: sorted(
            int(w[0])
            for ids, dom in probe.batches(step)
            for w, d in zip(ids, dom, strict=True)
            if d == 0
        )
        for step in (1, 6, 11)
    }
    a = store.val["a"]
    assert starts == {
        1: sorted([int(a[64]), int(a[48])]),
        6: sorted([int(a[32]), int(a[16])]),
        11: sorted([int(a[0]), int(a[64])]),
    }
    out = probe.measure(model, step=1)
    assert all(p.grad is None for p in model.parameters())
    (module,) = role_modules(model, "mlp_down", [len(model.model.layers) - 1])
    expected, losses = [], []
    for d in range(3):
        rows = [ids[dom == d] for ids, dom in probe.batches(1) if (dom == d).any()]
        model.zero_grad(set_to_none=True)
        total, count = 0.0, 0
        for ids in rows:
            tok = token_losses(model(input_ids=ids).logits, ids)
            tok.sum().backward()
            total += float(tok.sum().detach())
            count += tok.numel()
        expected.append(module.weight.grad.flatten().clone())
        losses.append(total / count)
    np.testing.assert_allclose(out["heldout_grad_sum"], torch.stack(expected).numpy(), atol=1e-5)
    np.testing.assert_allclose(out["heldout_loss"], losses, rtol=1e-5)
    assert out["heldout_grad_count"].tolist() == [30.0, 30.0, 9.0]  # 2 x 15, 2 x 15, 1 x 9


def test_heldout_windows_skip_the_text_the_evaluation_scores(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the evaluation reading the first 32 tokens of each split, the held-out windows come
    only from the rest; a domain with nothing left is left out (and named in a warning)."""
    from mixlab.mixing.base import HeldoutGradientNeeds
    from mixlab.model.factory import build_model
    from mixlab.train.probes import HeldoutProbe

    model = build_model(preset="llama-tiny", vocab_size=300, eos_id=1, max_seq_len=32, seed=0)
    store = _ValStore()  # a: 80 tokens, b: 48, c: 10 (shorter than a window: scored whole)
    needs = HeldoutGradientNeeds(every=1, windows_per_domain=3, blocks=(-1,))
    with caplog.at_level("WARNING"):
        probe = HeldoutProbe(needs, model, store, seq_len=16, reserved_tokens=32)
    assert "c (0 of 10 tokens unscored)" in caplog.text
    seen: dict[int, set[tuple[int, ...]]] = {0: set(), 1: set(), 2: set()}
    for step in range(1, 5):
        for ids, dom in probe.batches(step):
            for w, d in zip(ids, dom, strict=True):
                seen[int(d)].add(tuple(w.tolist()))
    for d, name in enumerate("ab"):
        tokens = store.val[name]
        allowed = {tuple(tokens[s : s + 16].tolist()) for s in range(32, len(tokens) - 15, 16)}
        assert seen[d] == allowed  # every unscored window, and only those
    assert not seen[2]
    out = probe.measure(model, step=1)
    assert out["heldout_grad_count"][2] == 0 and np.isnan(out["heldout_loss"][2])


def test_heldout_probe_refuses_when_the_evaluation_reads_everything() -> None:
    from mixlab.errors import ConfigError
    from mixlab.mixing.base import HeldoutGradientNeeds
    from mixlab.model.factory import build_model
    from mixlab.train.probes import HeldoutProbe

    model = build_model(preset="llama-tiny", vocab_size=300, eos_id=1, max_seq_len=32, seed=0)
    needs = HeldoutGradientNeeds(every=1, windows_per_domain=1, blocks=(-1,))
    with pytest.raises(ConfigError, match=r"eval\.max_tokens_per_domain"):
        HeldoutProbe(needs, model, _ValStore(), seq_len=16, reserved_tokens=None)
    with pytest.raises(ConfigError, match="reward=loss"):
        HeldoutProbe(needs, model, _ValStore(), seq_len=16, reserved_tokens=1000)


def test_heldout_probe_leaves_out_a_scrap_after_the_scored_windows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """40 tokens, the evaluation scores the first 32: the 8 left are less than a window."""
    from mixlab.mixing.base import HeldoutGradientNeeds
    from mixlab.model.factory import build_model
    from mixlab.train.probes import HeldoutProbe

    store = _ValStore()
    store.val["b"] = store.val["b"][:40]
    model = build_model(preset="llama-tiny", vocab_size=300, eos_id=1, max_seq_len=32, seed=0)
    needs = HeldoutGradientNeeds(every=1, windows_per_domain=1, blocks=(-1,))
    with caplog.at_level("WARNING"):
        probe = HeldoutProbe(needs, model, store, seq_len=16, reserved_tokens=32)
    assert "b (8 of 40 tokens unscored)" in caplog.text
    assert [d for d, _ in probe.windows] == [0]


def test_loss_only_probe_scores_the_same_unscored_windows_without_gradients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``losses_only`` (AC-ODM's ``progress_loss: heldout``): the same windows, spread over the
    unscored text, at every capture, their mean loss by a plain forward, no gradient anywhere;
    the warning and the error name the progress switch."""
    from mixlab.errors import ConfigError
    from mixlab.mixing.base import HeldoutGradientNeeds
    from mixlab.model.factory import build_model
    from mixlab.model.losses import token_losses
    from mixlab.train.probes import HeldoutProbe

    model = build_model(preset="llama-tiny", vocab_size=300, eos_id=1, max_seq_len=32, seed=0)
    store = _ValStore()  # a: 80 tokens, b: 48, c: 10
    needs = HeldoutGradientNeeds(every=5, windows_per_domain=2, blocks=(), losses_only=True)
    with caplog.at_level("WARNING"):
        probe = HeldoutProbe(needs, model, store, seq_len=16, reserved_tokens=32)
    assert "progress_loss=heldout" in caplog.text and "training loss instead" in caplog.text
    assert probe.capture is None
    first = [(ids.tolist(), dom.tolist()) for ids, dom in probe.batches(1)]
    assert all([(i.tolist(), d.tolist()) for i, d in probe.batches(s)] == first for s in (6, 11))
    a = store.val["a"]  # unscored windows start at 32, 48, 64: the first and the last
    starts_a = sorted(
        int(w[0]) for ids, dom in probe.batches(1) for w, d in zip(ids, dom, strict=True) if d == 0
    )
    assert starts_a == sorted([int(a[32]), int(a[64])])
    out = probe.measure(model, step=6)
    assert "heldout_grad_sum" not in out
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        expected = []
        for d in range(2):
            rows = torch.cat([ids[dom == d] for ids, dom in probe.batches(6)])
            expected.append(float(token_losses(model(input_ids=rows).logits, rows).mean()))
    np.testing.assert_allclose(out["heldout_loss"][:2], expected, rtol=1e-5)
    assert np.isnan(out["heldout_loss"][2]) and out["heldout_grad_count"][2] == 0
    with pytest.raises(ConfigError, match="progress_loss=train"):
        HeldoutProbe(needs, model, store, seq_len=16, reserved_tokens=None)
