import numpy as np
import pytest
from hypothesis import given, strategies as st

from sicref.config import LossConfig
from sicref.losses import (capacity_loss, conformal_isometry_loss, invariance_loss,
                           separation_loss, sic_loss)
from sicref.model import norm_relu


def random_points(seed, P, N, spread=0.2):
    rng = np.random.default_rng(seed)
    g = norm_relu(rng.normal(size=(P, N)))
    x = rng.uniform(-spread, spread, size=(P, 2))
    return g, x


@given(st.integers(2, 30), st.integers(1, 6), st.integers(0, 2**31),
       st.sampled_from(["mean", "sum"]))
def test_losses_are_invariant_to_reordering_the_points(P, N, seed, reduction):
    g, x = random_points(seed, P, N)
    order = np.random.default_rng(seed + 1).permutation(P)
    cfg = LossConfig(sigma_x=0.1, reduction=reduction)
    a = [separation_loss(g, x, 0.1, 0.4, reduction), invariance_loss(g, x, 0.1, reduction),
         capacity_loss(g)]
    b = [separation_loss(g[order], x[order], 0.1, 0.4, reduction),
         invariance_loss(g[order], x[order], 0.1, reduction), capacity_loss(g[order])]
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert np.isfinite(sic_loss(g[None], x[None], cfg)[0])


@given(st.integers(2, 30), st.integers(1, 6), st.integers(0, 2**31))
def test_ranges_of_the_terms(P, N, seed):
    g, x = random_points(seed, P, N)
    assert 0 <= separation_loss(g, x, 0.1, 0.4) <= 1
    assert invariance_loss(g, x, 0.1) >= 0
    assert -1 - 1e-12 <= capacity_loss(g) <= 0


def test_invariance_is_zero_when_all_codes_are_equal():
    g = np.tile(norm_relu(np.arange(1.0, 5.0)), (6, 1))
    x = np.random.default_rng(0).uniform(0, 0.01, size=(6, 2))
    assert invariance_loss(g, x, 0.05) == pytest.approx(0, abs=1e-12)
    # and all codes equal means every far pair has kernel 1
    x_far = np.arange(12.0).reshape(6, 2)
    assert separation_loss(g, x_far, 0.05, 0.4) == pytest.approx(1.0)


def hand_case():
    # three points: 0 and 1 close (dx = 0.03), 2 far from both
    x = np.array([[0.0, 0.0], [0.03, 0.0], [1.0, 0.0]])
    g = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    return g, x


def test_hand_computed_separation():
    g, x = hand_case()
    sg = 0.4
    # far ordered pairs: (0,2),(2,0),(1,2),(2,1); dg2(0,2) = 2, dg2(1,2) = 0.36 + 0.04
    k02 = np.exp(-2.0 / (2 * sg ** 2))
    k12 = np.exp(-0.4 / (2 * sg ** 2))
    assert separation_loss(g, x, 0.05, sg) == pytest.approx((k02 + k12) / 2, rel=1e-12)
    assert separation_loss(g, x, 0.05, sg, "sum") == pytest.approx(2 * (k02 + k12),
                                                                   rel=1e-12)


def test_hand_computed_invariance():
    g, x = hand_case()
    # close ordered pairs: (0,1),(1,0); dg2 = 0.16 + 0.64 = 0.8
    assert invariance_loss(g, x, 0.05) == pytest.approx(0.8, rel=1e-12)
    assert invariance_loss(g, x, 0.05, "sum") == pytest.approx(1.6, rel=1e-12)


def test_hand_computed_capacity():
    g, _ = hand_case()
    m = np.array([1.6, 1.8]) / 3
    assert capacity_loss(g) == pytest.approx(-(m @ m), rel=1e-12)


def test_hand_computed_conformal_isometry():
    g0 = np.array([1.0, 0.0])
    states = np.array([[[0.6, 0.8], [0.0, 1.0], [0.6, 0.8]]])
    v = np.array([[[0.02, 0.0], [0.0, 0.04], [0.1, 0.0]]])  # third step too fast
    # ratios: ||(−0.4, 0.8)|| / 0.02, ||(−0.6, 0.2)|| / 0.04
    r = np.array([np.sqrt(0.8) / 0.02, np.sqrt(0.4) / 0.04])
    assert conformal_isometry_loss(states, g0, v, 0.05) == pytest.approx(np.var(r))
    assert conformal_isometry_loss(states, g0, v, 0.05, "sum") == pytest.approx(
        np.sum((r - r.mean()) ** 2))


def test_mask_boundary_pair_is_in_neither_term():
    # dx exactly 0.5 (exact in binary) with sigma_x = 0.5
    x = np.array([[0.0, 0.0], [0.5, 0.0]])
    g = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert separation_loss(g, x, 0.5, 0.4) == 0.0
    assert invariance_loss(g, x, 0.5) == 0.0
    # nudged either side it joins one term
    assert separation_loss(g, x, 0.4999, 0.4) > 0
    assert invariance_loss(g, x, 0.5001) == pytest.approx(2.0)


def test_total_is_the_weighted_sum_of_parts():
    rng = np.random.default_rng(0)
    states = norm_relu(rng.normal(size=(3, 4, 5)))
    v = rng.uniform(-0.15, 0.15, size=(3, 4, 2))
    x = np.cumsum(v, axis=1)
    cfg = LossConfig(lambda_sep=0.7, lambda_inv=0.3, lambda_cap=0.2, lambda_coniso=0.01,
                     sigma_x=0.1)
    total, parts = sic_loss(states, x, cfg, v, norm_relu(rng.normal(size=5)))
    expected = (0.7 * parts["separation"] + 0.3 * parts["invariance"]
                + 0.2 * parts["capacity"] + 0.01 * parts["conformal_isometry"])
    assert total == pytest.approx(expected, rel=1e-12)


def _in_graph_total(states, x, cfg, v, g0):
    """The total with the conformal-isometry term always in the graph (weight and all),
    written out from the parts: what sic_loss computed before it skipped a zero weight."""
    from sicref.losses import pair_terms

    n = states.shape[-1]
    g = np.reshape(states, (-1, n))
    sep, inv = pair_terms(g, np.reshape(x, (-1, 2)), cfg)
    con = conformal_isometry_loss(states, g0, v, cfg.sigma_x, cfg.reduction)
    return (cfg.lambda_sep * sep + cfg.lambda_inv * inv
            + cfg.lambda_cap * capacity_loss(g) + cfg.lambda_coniso * con)


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_zero_coniso_weight_gives_the_same_bits_and_still_reports_the_term(method):
    from autograd import grad

    rng = np.random.default_rng(3)
    g0 = norm_relu(rng.normal(size=6))
    states = norm_relu(rng.normal(size=(3, 7, 6)))
    v = rng.uniform(-0.1, 0.1, size=(3, 7, 2))
    x = np.cumsum(v, axis=1)
    for weight in (0.0, 0.05):
        cfg = LossConfig(sigma_x=0.1, lambda_coniso=weight, method=method)
        total, parts = sic_loss(states, x, cfg, v, g0)
        assert total == _in_graph_total(states, x, cfg, v, g0)
        assert parts["conformal_isometry"] == conformal_isometry_loss(states, g0, v, 0.1)
        assert parts["conformal_isometry"] > 0
        d_new = grad(lambda s: sic_loss(s, x, cfg, v, g0)[0])(states)
        d_old = grad(lambda s: _in_graph_total(s, x, cfg, v, g0))(states)
        np.testing.assert_array_equal(d_new, d_old)
    # and a nonzero weight does move the gradient: the term is trained, not only reported
    d0 = grad(lambda s: sic_loss(s, x, LossConfig(sigma_x=0.1, method=method), v, g0)[0])(states)
    assert not np.array_equal(d0, d_new)
