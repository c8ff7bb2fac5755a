"""The fast paths against the plain formulations they replace.

sicref.fastloss (blockwise pair terms, SPEC §4) against the reference in sicref.losses,
and the hand-derived backward pass of model.permuted_preactivations (SPEC §3 note)
against autograd through the plain loop model.rollout_transitions.
"""

import tracemalloc

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad, value_and_grad
from autograd.test_util import check_grads
from hypothesis import given, strategies as st

from sicref import fastloss
from sicref.config import preset, replace
from sicref.data import sample_batch, sample_permutations
from sicref.losses import invariance_loss, pair_masks, separation_loss
from sicref.model import (init_params, initial_state, norm_relu, permuted_preactivations,
                          rollout_permuted, rollout_transitions, transition_matrices)
from sicref.train import batch_objective

RTOL = 1e-10


def reference_terms(g, x, sigma_x, sigma_g, reduction):
    return (separation_loss(g, x, sigma_x, sigma_g, reduction),
            invariance_loss(g, x, sigma_x, reduction))


def assert_close(fast, ref, atol):
    """Agreement to RTOL relative (norm-wise for arrays), with an absolute floor atol
    for values whose exact answer is 0."""
    fast, ref = np.asarray(fast, dtype=float), np.asarray(ref, dtype=float)
    assert np.all(np.isfinite(fast))
    assert np.linalg.norm(fast - ref) <= RTOL * np.linalg.norm(ref) + atol


def rounding_floor(g, sigma_g, n_pairs):
    """What the reference's own rounding may leave: its dg2 = |g_i|^2 + |g_j|^2 -
    2 g_i.g_j is off by a few ulp of |g|^2 per pair, so identical states do not give
    exactly 0 there as they do in the fast form."""
    scale = 1.0 + np.max(np.sum(g * g, axis=1), initial=0.0) / min(sigma_g, 1.0) ** 2
    return 1e-14 * scale * (1 + n_pairs)


# -- point sets ---------------------------------------------------------------------------

def make_points(layout, P, N, state, seed):
    """Positions x (P, 2) and states g (P, N) covering the degenerate cases of SPEC §4."""
    rng = np.random.default_rng(seed)
    if layout == "spread":
        x = rng.uniform(-0.3, 0.3, size=(P, 2))
    elif layout == "far apart":  # no close pairs
        x = np.stack([np.arange(P) * 10.0, np.zeros(P)], axis=1)
    elif layout == "one place":  # every pair close, none far
        x = np.full((P, 2), 0.25)
    elif layout == "grid":  # dx == sigma_x exactly for neighbours when sigma_x = 0.5
        x = 0.5 * rng.integers(0, 4, size=(P, 2)).astype(float)
    else:  # "clusters": coincident points, and pairs straddling blocks
        x = rng.choice(np.linspace(0.0, 0.3, 4), size=(P, 2))
    if state == "unit":
        g = norm_relu(rng.normal(size=(P, N)))
    elif state == "zero":
        g = np.zeros((P, N))
    elif state == "equal":
        g = np.tile(norm_relu(rng.uniform(0.1, 1.0, size=N)), (P, 1))
    else:  # "mixed": unit states, a few zero rows and repeated rows
        g = norm_relu(rng.normal(size=(P, N)))
        g[rng.random(P) < 0.2] = 0.0
        if P > 1:
            g[-1] = g[0]
    return x, g


LAYOUTS = ["spread", "far apart", "one place", "grid", "clusters"]
STATES = ["unit", "zero", "equal", "mixed"]


@given(layout=st.sampled_from(LAYOUTS), state=st.sampled_from(STATES),
       P=st.integers(0, 40), N=st.integers(1, 6), seed=st.integers(0, 2 ** 31),
       sigma_x=st.sampled_from([0.02, 0.05, 0.1, 0.3, 0.5]),
       sigma_g=st.floats(0.1, 2.0), reduction=st.sampled_from(["mean", "sum"]),
       block_rows=st.one_of(st.none(), st.integers(1, 12)))
def test_fast_terms_and_gradients_equal_the_reference(layout, state, P, N, seed, sigma_x,
                                                      sigma_g, reduction, block_rows):
    x, g = make_points(layout, P, N, state, seed)
    fast = fastloss.pair_terms_fast(g, x, sigma_x, sigma_g, reduction, block_rows)
    ref = reference_terms(g, x, sigma_x, sigma_g, reduction)
    n_pairs = 1 if reduction == "mean" else P * P
    atol = rounding_floor(g, sigma_g, n_pairs)
    for f, r in zip(fast, ref):
        assert_close(f, r, atol)
    if P == 0:
        return
    for k in (0, 1):
        d_fast = grad(lambda g: fastloss.pair_terms_fast(g, x, sigma_x, sigma_g, reduction,
                                                         block_rows)[k])(g)
        d_ref = grad(lambda g: reference_terms(g, x, sigma_x, sigma_g, reduction)[k])(g)
        assert_close(d_fast, d_ref, atol)


@given(layout=st.sampled_from(LAYOUTS), P=st.integers(0, 40), seed=st.integers(0, 2 ** 31),
       sigma_x=st.sampled_from([0.05, 0.1, 0.5]))
def test_near_pairs_follow_the_reference_masks_exactly(layout, P, seed, sigma_x):
    x, _ = make_points(layout, P, 1, "zero", seed)
    i, j, close = fastloss.near_pairs(x, sigma_x)
    far, close_ref = pair_masks(x, sigma_x)
    near_ref = ~far
    np.fill_diagonal(near_ref, False)
    assert np.all(i < j)
    assert sorted(zip(i, j)) == sorted(zip(*np.nonzero(np.triu(near_ref))))
    assert sorted(zip(i[close], j[close])) == sorted(zip(*np.nonzero(np.triu(close_ref))))
    assert fastloss.pair_counts(P, (i, j, close)) == (far.sum(), close_ref.sum())


def test_boundary_pairs_are_in_neither_term():
    # a 0.5 grid with sigma_x = 0.5: neighbours at dx == sigma_x exactly
    x = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [0.5, 0.5], [1.5, 0.0]])
    g = norm_relu(np.random.default_rng(0).normal(size=(5, 3)))
    i, j, close = fastloss.near_pairs(x, 0.5)
    assert len(i) == 4 and not close.any()
    assert fastloss.pair_counts(5, (i, j, close)) == (20 - 8, 0)
    sep, inv = fastloss.pair_terms_fast(g, x, 0.5, 0.4)
    assert inv == 0.0
    assert sep == pytest.approx(separation_loss(g, x, 0.5, 0.4), rel=1e-13)


def test_zero_states_give_kernel_one_and_finite_gradients():
    x = np.random.default_rng(1).uniform(0, 1, size=(30, 2))
    g = np.zeros((30, 4))
    sep, inv = fastloss.pair_terms_fast(g, x, 0.1, 0.4)
    assert sep == 1.0 and inv == 0.0
    d = grad(lambda g: anp.sum(anp.stack(fastloss.pair_terms_fast(g, x, 0.1, 0.4))))(g)
    assert np.all(d == 0.0)


def test_large_states_do_not_overflow():
    # |g|^2 / sigma_g^2 = 1e6: a_i a_j exp(g_i.g_j / sg^2) would overflow; the clipped
    # exponent does not, and far, distinct states give a kernel of exactly 0.
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    g = np.array([[100.0, 0.0], [0.0, 100.0], [100.0, 0.0]])
    sep, _ = fastloss.pair_terms_fast(g, x, 0.05, 0.1, "sum")
    assert sep == pytest.approx(2.0)  # only (0, 2) and (2, 0): equal states, kernel 1
    d = grad(lambda g: fastloss.pair_terms_fast(g, x, 0.05, 0.1, "sum")[0])(g)
    assert np.all(np.isfinite(d))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fast_vjp_matches_finite_differences(reduction):
    rng = np.random.default_rng(2)
    g = norm_relu(rng.normal(size=(25, 4))) + 0.01
    x = rng.uniform(-0.1, 0.1, size=(25, 2))
    for k in (0, 1):
        check_grads(lambda g: fastloss.pair_terms_fast(g, x, 0.05, 0.4, reduction, 7)[k],
                    modes=["rev"], order=1)(g)


def test_second_derivatives_are_refused_not_wrong():
    rng = np.random.default_rng(9)
    g = norm_relu(rng.normal(size=(10, 3)))
    x = rng.uniform(-0.1, 0.1, size=(10, 2))
    first = lambda g: anp.sum(grad(lambda g: fastloss.pair_terms_fast(g, x, 0.05, 0.4)[0])(g))
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        grad(first)(g)


def test_value_does_not_depend_on_differentiation():
    rng = np.random.default_rng(3)
    g = norm_relu(rng.normal(size=(60, 5)))
    x = rng.uniform(-0.2, 0.2, size=(60, 2))
    plain = fastloss.pair_terms_fast(g, x, 0.05, 0.4, "sum", 16)
    traced, _ = value_and_grad(
        lambda g: anp.stack(fastloss.pair_terms_fast(g, x, 0.05, 0.4, "sum", 16)) @ [1, 1])(g)
    assert traced == plain[0] + plain[1]


def test_memory_is_linear_in_the_number_of_points():
    # P = 4000: one P x P float64 matrix is 128 MB; the blockwise form must stay far below.
    rng = np.random.default_rng(4)
    P = 4000
    g = norm_relu(rng.normal(size=(P, 8)))
    x = np.cumsum(rng.uniform(-0.15, 0.15, size=(P, 2)), axis=0)
    tracemalloc.start()
    try:
        grad(lambda g: fastloss.pair_terms_fast(g, x, 0.05, 0.4, "mean", 256)[0])(g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_batch_objective_gradient_is_the_same_with_both_methods(reduction):
    cfg = preset("tiny")
    rng = np.random.default_rng(6)
    params = init_params(rng, cfg.model.n_units, cfg.model.hidden)
    for B, T in [(cfg.data.batch_size, cfg.data.seq_len), (20, 15)]:
        batch = sample_batch(rng, B, T)
        results = {}
        for method in ("reference", "fast"):
            c = replace(cfg, loss={"method": method, "reduction": reduction})
            parts = {}
            value, grads = value_and_grad(batch_objective)(params, batch, c, parts)
            results[method] = value, grads, parts
        (v_ref, g_ref, p_ref), (v_fast, g_fast, p_fast) = results["reference"], results["fast"]
        assert v_fast == pytest.approx(v_ref, rel=RTOL)
        for name in p_ref:
            assert p_fast[name] == pytest.approx(p_ref[name], rel=RTOL, abs=1e-14)
        for name in g_ref:
            assert_close(g_fast[name], g_ref[name], 1e-14)


# -- the permuted rollout's hand-derived backward pass (SPEC §3 note) ----------------------

def plain_permuted_rollout(params, base, perm, norm_eps=1e-8):
    """rollout_permuted as the plain autograd loop: gather W(v) per step."""
    B, T = perm.shape
    W_base = transition_matrices(params, base)
    g0 = initial_state(params, norm_eps)
    return g0, rollout_transitions(lambda t: W_base[perm[:, t]], g0, B, T, norm_eps)


@given(B=st.integers(1, 6), T=st.integers(1, 7), N=st.integers(1, 6),
       kind=st.sampled_from(["permutation", "identity", "any indices"]),
       seed=st.integers(0, 2 ** 31))
def test_permuted_rollout_states_and_gradients_equal_the_plain_loop(B, T, N, kind, seed):
    rng = np.random.default_rng(seed)
    params = init_params(rng, N, 5)
    base = rng.uniform(-0.15, 0.15, size=(T, 2))
    if kind == "any indices":  # uneven use of the base velocities, some unused
        perm = rng.integers(0, T, size=(B, T))
    else:
        perm = sample_permutations(rng, B, T, kind)
    weights = rng.normal(size=(B, T, N))

    def objective(rollout):
        return lambda p: anp.sum(rollout(p, base, perm)[1] * weights)

    fast_states = rollout_permuted(params, base, perm)[1]
    assert np.array_equal(fast_states, plain_permuted_rollout(params, base, perm)[1])
    v_fast, g_fast = value_and_grad(objective(rollout_permuted))(params)
    v_plain, g_plain = value_and_grad(objective(plain_permuted_rollout))(params)
    assert v_fast == v_plain
    # A state with one positive unit has a zero Jacobian that both compute as rounding
    # noise: an absolute floor proportional to the cotangent covers it.
    atol = 1e-13 * np.abs(weights).sum()
    for name in g_plain:
        assert_close(g_fast[name], g_plain[name], atol)


def test_permuted_rollout_gradient_at_collapsed_states():
    # Negative transition matrices drive every state to 0; pre-activations are then
    # exactly 0 and autograd's max() ties pass half the cotangent: the same here.
    rng = np.random.default_rng(7)
    params = init_params(rng, 4, 5)
    params["mlp/b2"] = params["mlp/b2"] - 10.0
    base = rng.uniform(-0.15, 0.15, size=(5, 2))
    perm = sample_permutations(rng, 3, 5)
    weights = rng.normal(size=(3, 5, 4))
    assert np.all(rollout_permuted(params, base, perm)[1] == 0)
    f = lambda r: (lambda p: anp.sum(r(p, base, perm)[1] * weights))
    g_fast = grad(f(rollout_permuted))(params)
    g_plain = grad(f(plain_permuted_rollout))(params)
    for name in g_plain:
        assert_close(g_fast[name], g_plain[name], 1e-14)


def test_permuted_preactivations_vjp_matches_finite_differences():
    rng = np.random.default_rng(8)
    W = rng.normal(size=(4, 3, 3))
    g0 = norm_relu(rng.uniform(0.1, 1.0, size=3))
    perm = sample_permutations(rng, 3, 4)
    check_grads(lambda W, g0: permuted_preactivations(W, g0, perm), modes=["rev"],
                order=1)(W, g0)
