import autograd.numpy as anp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from sicref.model import (init_params, mlp_sizes, norm_relu, rollout, rollout_permuted,
                          rollout_transitions, transition_matrices)


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=20),
       st.floats(1e-3, 1e3))
def test_norm_relu_is_nonnegative_unit_norm_and_scale_invariant(xs, scale):
    x = np.array(xs)
    y = norm_relu(x)
    assert np.all(y >= 0)
    n = np.linalg.norm(y)
    r = np.linalg.norm(np.maximum(x, 0))
    if r > 1e-6:
        assert abs(n - 1) < 1e-12
    if min(r, scale * r) > 1e-6:  # both above eps: a positive scale drops out
        np.testing.assert_allclose(norm_relu(scale * x), y, atol=1e-12)
    else:
        assert n <= 1 + 1e-12


def test_norm_relu_of_nonpositive_vector_is_zero():
    assert np.all(norm_relu(np.array([-1.0, 0.0, -3.0])) == 0)


def test_norm_relu_hand_computed():
    np.testing.assert_allclose(norm_relu(np.array([3.0, -1.0, 4.0])), [0.6, 0.0, 0.8])


def test_init_shapes_and_ranges():
    p = init_params(np.random.default_rng(0), n_units=5, hidden=7)
    assert mlp_sizes(5, 7) == [2, 7, 7, 25]
    assert p["mlp/W0"].shape == (2, 7) and p["mlp/W2"].shape == (7, 25)
    assert p["mlp/b1"].shape == (7,) and p["g0_raw"].shape == (5,)
    assert np.abs(p["mlp/W1"]).max() <= 1 / np.sqrt(7)
    assert np.abs(p["mlp/W0"]).max() <= 1 / np.sqrt(2)


def test_transition_matrix_is_row_major_reshape_of_mlp_output():
    p = init_params(np.random.default_rng(0), n_units=3, hidden=4)
    v = np.array([0.1, -0.05])
    h = np.maximum(v @ p["mlp/W0"] + p["mlp/b0"], 0)
    h = np.maximum(h @ p["mlp/W1"] + p["mlp/b1"], 0)
    y = h @ p["mlp/W2"] + p["mlp/b2"]
    W = transition_matrices(p, v)
    for i in range(3):
        for j in range(3):
            assert W[i, j] == pytest.approx(y[i * 3 + j], abs=1e-15)


def test_rollout_matches_a_hand_loop():
    rng = np.random.default_rng(3)
    p = init_params(rng, n_units=4, hidden=6)
    v = rng.uniform(-0.15, 0.15, size=(2, 5, 2))
    g0, states = rollout(p, v)
    g = np.maximum(p["g0_raw"], 0) / np.linalg.norm(np.maximum(p["g0_raw"], 0))
    np.testing.assert_allclose(g0, g)
    for b in range(2):
        g = g0
        for t in range(5):
            g = norm_relu(transition_matrices(p, v[b, t]) @ g)
            np.testing.assert_allclose(states[b, t], g, atol=1e-14)


def test_permuted_rollout_equals_general_rollout():
    rng = np.random.default_rng(4)
    p = init_params(rng, n_units=6, hidden=8)
    base = rng.uniform(-0.15, 0.15, size=(7, 2))
    perm = np.stack([rng.permutation(7) for _ in range(3)])
    _, a = rollout_permuted(p, base, perm)
    _, b = rollout(p, base[perm])
    np.testing.assert_allclose(a, b, atol=1e-14)


# -- path equivalence --------------------------------------------------------------------

def circulant(c):
    """Circulant matrix with first column c: all circulants commute."""
    n = len(c)
    return np.stack([np.roll(c, k) for k in range(n)], axis=1)


def final_states(W_of_velocity, velocities, g0):
    B, T, _ = velocities.shape
    states = rollout_transitions(lambda t: anp.stack([W_of_velocity(v) for v in velocities[:, t]]),
                                 g0, B, T)
    return states[:, -1]


@given(n=st.integers(2, 8), T=st.integers(1, 8), B=st.integers(2, 5),
       seed=st.integers(0, 2**31))
def test_permuted_paths_reach_the_same_state_with_commuting_transitions(n, T, B, seed):
    """With a commuting, non-negative transition family, NormReLU acts as a plain
    normalisation, so every ordering of the same velocities reaches the same state."""
    rng = np.random.default_rng(seed)
    coeffs = rng.uniform(0.1, 1.0, size=(3, n))

    def W(v):
        return circulant(coeffs[0] + v[0] * coeffs[1] + v[1] * coeffs[2] + 0.2)

    base = rng.uniform(-0.15, 0.15, size=(T, 2))
    perm = np.stack([rng.permutation(T) for _ in range(B)])
    g0 = norm_relu(rng.uniform(0.1, 1.0, size=n))
    finals = final_states(W, base[perm], g0)
    np.testing.assert_allclose(finals, np.broadcast_to(finals[0], finals.shape),
                               atol=1e-12)


def test_random_mlp_does_not_give_path_equivalence():
    """The same check with an untrained MLP fails: the property above is not automatic."""
    rng = np.random.default_rng(0)
    p = init_params(rng, n_units=8, hidden=16)
    base = rng.uniform(-0.15, 0.15, size=(6, 2))
    perm = np.stack([np.arange(6), np.arange(6)[::-1]])
    finals = final_states(lambda v: transition_matrices(p, v), base[perm],
                          norm_relu(p["g0_raw"]))
    assert np.abs(finals[0] - finals[1]).max() > 1e-3
