"""Autograd gradients against central finite differences on tiny sizes."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from sicref.config import LossConfig, preset
from sicref.data import sample_batch
from sicref.losses import (capacity_loss, conformal_isometry_loss, invariance_loss,
                           separation_loss)
from sicref.model import init_params, norm_relu
from sicref.train import batch_objective


def test_loss_terms_match_finite_differences():
    rng = np.random.default_rng(0)
    g = norm_relu(rng.normal(size=(12, 4))) + 0.01
    x = rng.uniform(-0.1, 0.1, size=(12, 2))
    for red in ("mean", "sum"):
        check_grads(lambda g: separation_loss(g, x, 0.05, 0.4, red), modes=["rev"])(g)
        check_grads(lambda g: invariance_loss(g, x, 0.05, red), modes=["rev"])(g)
    check_grads(capacity_loss, modes=["rev"])(g)


def test_conformal_isometry_matches_finite_differences():
    rng = np.random.default_rng(1)
    states = rng.uniform(0.1, 1, size=(2, 5, 3))
    v = rng.uniform(-0.03, 0.03, size=(2, 5, 2))
    g0 = rng.uniform(0.1, 1, size=3)
    check_grads(lambda s: conformal_isometry_loss(s, g0, v, 0.05), modes=["rev"])(states)


def test_norm_relu_matches_finite_differences_and_is_safe_at_zero():
    x = np.array([0.3, -0.2, 1.1, 0.05])
    check_grads(lambda x: norm_relu(x), modes=["rev"])(x)
    g = grad(lambda x: anp.sum(norm_relu(x) * np.arange(3.0)))(np.array([-1.0, -2.0, -0.5]))
    assert np.all(np.isfinite(g))


def _central_difference(f, params, name, index, h=1e-6):
    plus = {k: v.copy() for k, v in params.items()}
    minus = {k: v.copy() for k, v in params.items()}
    plus[name][index] += h
    minus[name][index] -= h
    return (f(plus) - f(minus)) / (2 * h)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_whole_model_gradient_matches_finite_differences(reduction):
    cfg = preset("tiny")
    cfg = cfg.__class__(data=cfg.data, model=cfg.model, optim=cfg.optim, train=cfg.train,
                        loss=LossConfig(sigma_x=0.1, lambda_coniso=0.01,
                                        reduction=reduction))
    rng = np.random.default_rng(5)
    params = init_params(rng, cfg.model.n_units, cfg.model.hidden)
    batch = sample_batch(rng, cfg.data.batch_size, cfg.data.seq_len)
    f = lambda p: batch_objective(p, batch, cfg)
    g = grad(f)(params)
    pick = np.random.default_rng(6)
    for name, value in params.items():
        for _ in range(3):
            index = tuple(pick.integers(0, s) for s in value.shape)
            fd = _central_difference(f, params, name, index)
            assert g[name][index] == pytest.approx(fd, rel=1e-4, abs=1e-7), (name, index)
