"""Tests for sicref.idealcodes: ideal lattice codes and their SIC loss."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sicref import losses
from sicref.config import DataConfig, LossConfig
from sicref.gridness import grid_score
from sicref.idealcodes import LossProbe, Module, fit_code, ideal_code


def _grid_points(size, n):
    c = (np.arange(n) + 0.5) / n * size - size / 2
    xx, yy = np.meshgrid(c, c)
    return np.stack([xx.ravel(), yy.ravel()], 1)


@settings(max_examples=30, deadline=None)
@given(period=st.floats(0.2, 2.0), orientation=st.floats(0, 60), beta=st.floats(0.1, 5.0),
       i=st.integers(0, 1), x=st.floats(-3, 3), y=st.floats(-3, 3))
def test_rates_repeat_on_the_lattice(period, orientation, beta, i, x, y):
    m = Module(period, n_side=3, beta=beta, orientation=orientation)
    p = np.array([[x, y]])
    shifted = p + m.lattice_vectors()[i]
    np.testing.assert_allclose(m.rates(p), m.rates(shifted), rtol=1e-9, atol=1e-12)


def test_field_centres_are_the_phases_and_rates_are_non_negative():
    m = Module(0.7, n_side=4, beta=2.0, threshold=0.3)
    r = m.rates(m.phases())
    # unit i peaks (rate (1 - threshold) * weight) at its own phase
    np.testing.assert_allclose(np.diag(r), 0.7)
    assert (r >= 0).all() and (r <= 0.7 + 1e-12).all()


def test_code_is_non_negative_and_unit_norm():
    x = np.random.default_rng(0).uniform(-2, 2, (200, 2))
    g = ideal_code(x, (Module(0.5, 3, 1.0), Module(0.8, 2, 3.0, threshold=0.2, weight=2.0)))
    assert g.shape == (200, 13)
    assert (g >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0)


def test_a_unit_ratemap_is_a_hexagonal_grid_of_the_given_period():
    # known answer through the independent scorer of SPEC §7.4-§7.5
    size, n = 2.0, 32
    m = Module(0.6, n_side=1, beta=3.0, orientation=10.0)
    rm = m.rates(_grid_points(size, n))[:, 0].reshape(n, n)
    s = grid_score(rm)
    assert s.score60 > 0.8 and s.score60 > s.score90
    assert abs(s.period * size / n - 0.6) < 0.05
    assert abs(s.orientation - 10.0) < 5.0


def test_invalid_module_names_the_field():
    with pytest.raises(ValueError, match="period"):
        ideal_code(np.zeros((2, 2)), (Module(-1.0),))
    with pytest.raises(ValueError, match="threshold"):
        ideal_code(np.zeros((2, 2)), (Module(1.0, threshold=1.0),))
    with pytest.raises(ValueError, match="at least one module"):
        ideal_code(np.zeros((2, 2)), ())


DATA = DataConfig(batch_size=6, seq_len=10)
LOSS = LossConfig(sigma_x=0.05, sigma_g=0.5, lambda_cap=0.5)


def test_probe_matches_the_reference_losses():
    probe = LossProbe(DATA, LOSS, n_batches=2, seed=3)
    code = (Module(0.6, 3, 0.7), Module(0.9, 2, 2.0, threshold=0.1, weight=1.5))
    parts = []
    for x in probe.positions:
        g = ideal_code(x, code)
        parts.append((losses.separation_loss(g, x, LOSS.sigma_x, LOSS.sigma_g),
                      losses.invariance_loss(g, x, LOSS.sigma_x), losses.capacity_loss(g)))
    np.testing.assert_allclose(probe.parts(code), np.mean(parts, 0), rtol=1e-10)
    sep, inv, cap = probe.parts(code)
    assert probe.total(code) == pytest.approx(sep + 0.1 * inv + 0.5 * cap, rel=1e-12)


def test_two_identical_modules_score_as_one():
    # duplicating every unit leaves every code distance and the mean's norm unchanged
    probe = LossProbe(DATA, LOSS, n_batches=2)
    one = (Module(0.7, 4, 1.2, threshold=0.1),)
    np.testing.assert_allclose(probe.parts(one + one), probe.parts(one), rtol=1e-10)


def test_probe_refuses_sum_reduction():
    with pytest.raises(ValueError, match="reduction"):
        LossProbe(DATA, LossConfig(reduction="sum"))


def test_fit_lowers_the_loss_and_keeps_unit_counts():
    probe = LossProbe(DATA, LOSS, n_batches=1)
    start = (Module(2.0, 3, 3.0, threshold=0.5),)
    fit = fit_code(probe, [start], max_evaluations=80)
    assert fit.total < probe.total(start)
    assert fit.modules[0].n_side == 3 and fit.modules[0].weight == 1.0
    assert fit.total == pytest.approx(probe.total(fit.modules))


def test_network_parts_match_the_training_loss_on_the_same_batches():
    from sicref.model import init_params, rollout
    from sicref.losses import sic_loss

    probe = LossProbe(DATA, LOSS, n_batches=2, seed=1)
    params = init_params(np.random.default_rng(0), 6, 8)
    parts = []
    for b in probe.batches:
        _, states = rollout(params, b.velocities)
        _, p = sic_loss(states, b.positions, LOSS)
        parts.append((p["separation"], p["invariance"], p["capacity"]))
    np.testing.assert_allclose(probe.network_parts(params), np.mean(parts, 0), rtol=1e-9)
