import numpy as np
import pytest

from sicref.optim import (adamw_init, adamw_update, clip_by_global_norm, global_norm,
                          mean_of_grads, plateau_init, plateau_update)


def test_first_adamw_step_equals_the_closed_form():
    # after one step m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps)
    p = {"w": np.array([1.0, -2.0, 0.5])}
    g = {"w": np.array([0.3, -0.001, 0.0])}
    new, state = adamw_update(p, g, adamw_init(p), lr=0.1, eps=1e-8)
    expected = p["w"] - 0.1 * g["w"] / (np.abs(g["w"]) + 1e-8)
    np.testing.assert_allclose(new["w"], expected, rtol=1e-12)
    assert state["t"] == 1


def test_weight_decay_is_decoupled():
    # with zero gradient, AdamW shrinks p by lr * wd * p exactly (no moment scaling)
    p = {"w": np.array([2.0, -4.0])}
    g = {"w": np.zeros(2)}
    new, _ = adamw_update(p, g, adamw_init(p), lr=0.1, weight_decay=0.5)
    np.testing.assert_allclose(new["w"], p["w"] * (1 - 0.1 * 0.5))


def test_adamw_decreases_a_quadratic():
    target = np.array([3.0, -1.0, 0.5])
    p = {"w": np.zeros(3)}
    state = adamw_init(p)
    for _ in range(500):
        p, state = adamw_update(p, {"w": 2 * (p["w"] - target)}, state, lr=0.05)
    assert np.sum((p["w"] - target) ** 2) < 1e-3


def _adamw_whole_arrays(params, grads, state, lr, beta1, beta2, eps, weight_decay):
    """The AdamW formula on whole arrays, one numpy expression per line."""
    t = state["t"] + 1
    c1, c2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
    out, m_new, v_new = {}, {}, {}
    for k, p in params.items():
        m = beta1 * state["m"][k] + (1.0 - beta1) * grads[k]
        v = beta2 * state["v"][k] + (1.0 - beta2) * grads[k] * grads[k]
        out[k] = p - lr * weight_decay * p - lr * (m / c1) / (np.sqrt(v / c2) + eps)
        m_new[k], v_new[k] = m, v
    return out, {"t": t, "m": m_new, "v": v_new}


@pytest.mark.parametrize("chunk", [5, 1 << 15])
def test_chunked_adamw_equals_the_whole_array_formula_bit_for_bit(monkeypatch, chunk):
    import sicref.optim as optim
    monkeypatch.setattr(optim, "CHUNK", chunk)
    rng = np.random.default_rng(3)
    shapes = {"big": (7, 13), "odd": (23,), "one": (1,), "scalar": ()}
    p = {k: rng.normal(size=s) for k, s in shapes.items()}
    kw = dict(lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    state = adamw_init(p)
    expected_p, expected_state = p, adamw_init(p)
    for _ in range(4):
        g = {k: rng.normal(size=s) * 10.0 ** rng.integers(-6, 1) for k, s in shapes.items()}
        before = {k: v.copy() for k, v in p.items()}
        p, state = optim.adamw_update(p, g, state, **kw)
        expected_p, expected_state = _adamw_whole_arrays(expected_p, g, expected_state, **kw)
        for k in shapes:
            assert p[k].shape == shapes[k]
            assert np.array_equal(p[k], expected_p[k])
            assert np.array_equal(state["m"][k], expected_state["m"][k])
            assert np.array_equal(state["v"][k], expected_state["v"][k])
            assert not np.array_equal(p[k], before[k])
    assert state["t"] == 4


def test_adamw_leaves_its_inputs_alone():
    p = {"w": np.array([1.0, -2.0])}
    g = {"w": np.array([0.5, 0.25])}
    state = adamw_init(p)
    copies = ({"w": p["w"].copy()}, {"w": g["w"].copy()})
    adamw_update(p, g, state, lr=0.1, weight_decay=0.1)
    assert np.array_equal(p["w"], copies[0]["w"]) and np.array_equal(g["w"], copies[1]["w"])
    assert state["t"] == 0 and not state["m"]["w"].any() and not state["v"]["w"].any()


def test_global_norm_after_clipping_equals_the_bound():
    g = {"a": np.array([3.0, 4.0]), "b": np.array([[12.0]])}
    assert global_norm(g) == pytest.approx(13.0)
    clipped, norm = clip_by_global_norm(g, 1.3)
    assert norm == pytest.approx(13.0)
    assert global_norm(clipped) == pytest.approx(1.3, rel=1e-14)
    np.testing.assert_allclose(clipped["a"], [0.3, 0.4])


def test_clipping_leaves_small_gradients_alone():
    g = {"a": np.array([0.1, 0.2])}
    assert clip_by_global_norm(g, 1.0)[0] is g
    assert clip_by_global_norm(g, 0.0)[0] is g


def test_accumulation_is_the_mean():
    out = mean_of_grads([{"a": np.array([1.0, 3.0])}, {"a": np.array([3.0, 5.0])}])
    np.testing.assert_allclose(out["a"], [2.0, 4.0])
    single = {"a": np.array([1.0, -0.0])}
    assert mean_of_grads([single]) is single


def test_plateau_reduces_lr_after_patience_windows_without_improvement():
    kw = dict(factor=0.5, patience=2, window=3, threshold=1e-4, min_lr=1e-4)
    s = plateau_init(1e-2)
    for _ in range(3):
        s = plateau_update(s, 1.0, **kw)  # first window sets best = 1.0
    assert s["best"] == 1.0 and s["lr"] == 1e-2
    for _ in range(6):
        s = plateau_update(s, 1.0, **kw)  # two bad windows: still within patience
    assert s["lr"] == 1e-2
    for _ in range(3):
        s = plateau_update(s, 1.0, **kw)  # third bad window: reduce
    assert s["lr"] == pytest.approx(5e-3)
    for _ in range(3):
        s = plateau_update(s, 0.5, **kw)  # improvement resets the count
    assert s["best"] == 0.5 and s["bad_windows"] == 0


def test_plateau_respects_min_lr():
    s = plateau_init(1e-3)
    for _ in range(10):
        s = plateau_update(s, 1.0, factor=0.1, patience=0, window=1, threshold=0,
                           min_lr=5e-4)
    assert s["lr"] == 5e-4


@pytest.mark.parametrize("chunk", [5, 1 << 15])
def test_adamw_in_place_gives_the_same_bits_in_the_same_arrays(monkeypatch, chunk):
    import sicref.optim as optim
    monkeypatch.setattr(optim, "CHUNK", chunk)
    rng = np.random.default_rng(4)
    shapes = {"big": (7, 13), "odd": (23,), "scalar": ()}
    p = {k: rng.normal(size=s) for k, s in shapes.items()}
    kw = dict(lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    pure_p, pure_state = {k: v.copy() for k, v in p.items()}, adamw_init(p)
    state = adamw_init(p)
    arrays = [p[k] for k in shapes] + [state[m][k] for m in ("m", "v") for k in shapes]
    for _ in range(3):
        g = {k: rng.normal(size=s) for k, s in shapes.items()}
        p, state = optim.adamw_update(p, g, state, inplace=True, **kw)
        pure_p, pure_state = optim.adamw_update(pure_p, g, pure_state, **kw)
        now = [p[k] for k in shapes] + [state[m][k] for m in ("m", "v") for k in shapes]
        for k in shapes:
            assert p[k].shape == shapes[k]
            assert np.array_equal(p[k], pure_p[k])
            assert np.array_equal(state["m"][k], pure_state["m"][k])
            assert np.array_equal(state["v"][k], pure_state["v"][k])
        assert all(np.shares_memory(a, b) for a, b in zip(arrays, now))
    assert state["t"] == 3


def test_adamw_in_place_leaves_arrays_it_cannot_write_alone():
    base = np.arange(12.0).reshape(3, 4)
    strided = base[:, ::2]  # not contiguous: a reshape of it would be a copy
    frozen = np.array([1.0, -2.0])
    frozen.flags.writeable = False
    p = {"s": strided, "f": frozen, "i": np.array([1, 2])}
    g = {k: np.ones(np.shape(v)) for k, v in p.items()}
    copies = {k: np.array(v) for k, v in p.items()}
    state = adamw_init({k: np.asarray(v, dtype=float) for k, v in p.items()})
    new, _ = adamw_update(p, g, state, lr=0.1, inplace=True)
    pure, _ = adamw_update(copies, g, adamw_init({k: np.asarray(v, dtype=float)
                                                  for k, v in copies.items()}), lr=0.1)
    for k in p:
        assert np.array_equal(p[k], copies[k])  # untouched
        assert np.array_equal(new[k], pure[k]) and new[k].shape == np.shape(p[k])
