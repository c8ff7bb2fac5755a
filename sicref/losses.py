"""SIC losses: separation, invariance, capacity, conformal isometry (SPEC §4).

The P = B*T post-step states g_1..g_T of every trajectory, with the positions they
were reached at, form the points. Pair terms run over ordered pairs (i, j):
dx = ||x_i - x_j||, dg2 = ||g_i - g_j||^2. A pair with dx == sigma_x belongs to
neither term. "mean" averages each term over its own pairs (an empty set gives 0);
"sum" sums it.

This module holds the readable reference formulation (P x P matrices). The
memory-bounded blockwise form is `sicref.fastloss`; `LossConfig.method` picks one.
"""

import autograd.numpy as np
import numpy as onp
from autograd.tracer import getval

PARTS = ("separation", "invariance", "capacity", "conformal_isometry")


def spatial_distances(x):
    """dx for every ordered pair of points x (P, 2): a constant (P, P) matrix."""
    x = onp.asarray(x, dtype=onp.float64)
    diff = x[:, None, :] - x[None, :, :]
    return onp.sqrt(onp.sum(diff * diff, axis=-1))


def pair_masks(x, sigma_x):
    """SPEC §4: far pairs (dx > sigma_x) and close pairs (dx < sigma_x, i != j)."""
    dx = spatial_distances(x)
    far = dx > sigma_x
    close = dx < sigma_x
    onp.fill_diagonal(close, False)
    return far, close


def neural_sq_distances(g):
    """dg2 = ||g_i - g_j||^2 = |g_i|^2 + |g_j|^2 - 2 g_i.g_j, clipped at 0 against rounding."""
    sq = np.sum(g * g, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * np.dot(g, g.T), 0.0)


def _reduce(total, count, reduction):
    if reduction == "sum":
        return total
    return total / count if count > 0 else 0.0 * total


def separation_term(dg2, far, sigma_g, reduction="mean"):
    """SPEC §4: separation, exp(-dg2 / (2 sigma_g^2)) over the pairs marked `far`."""
    kernel = np.exp(-dg2 / (2.0 * sigma_g ** 2))
    return _reduce(np.sum(kernel * far), onp.count_nonzero(far), reduction)


def invariance_term(dg2, close, reduction="mean"):
    """SPEC §4: path invariance, dg2 over the pairs marked `close`."""
    return _reduce(np.sum(dg2 * close), onp.count_nonzero(close), reduction)


def separation_loss(g, x, sigma_x, sigma_g, reduction="mean"):
    """SPEC §4: separation over pairs with dx > sigma_x."""
    far, _ = pair_masks(x, sigma_x)
    return separation_term(neural_sq_distances(g), far, sigma_g, reduction)


def invariance_loss(g, x, sigma_x, reduction="mean"):
    """SPEC §4: path invariance over pairs with dx < sigma_x, i != j."""
    _, close = pair_masks(x, sigma_x)
    return invariance_term(neural_sq_distances(g), close, reduction)


def capacity_loss(g):
    """SPEC §4: capacity, -||mean_i g_i||^2 (same under both reductions)."""
    m = np.mean(g, axis=0)
    return -np.sum(m * m)


def conformal_isometry_loss(states, initial_state, velocities, sigma_x, reduction="mean"):
    """SPEC §4: variance of ||g_t - g_{t-1}|| / ||v_t|| over steps with 0 < ||v_t|| < sigma_x.

    The step norm is sqrt(max(d2, 1e-30)) so that a zero step has a finite gradient.
    Fewer than two qualifying steps give 0. "sum" gives the sum of squared deviations.
    """
    B = states.shape[0]
    previous = np.concatenate(
        [np.tile(initial_state, (B, 1))[:, None, :], states[:, :-1]], axis=1)
    step = states - previous
    step_norm = np.sqrt(np.maximum(np.sum(step * step, axis=-1), 1e-30))
    speed = onp.sqrt(onp.sum(onp.asarray(velocities, dtype=onp.float64) ** 2, axis=-1))
    slow = (speed > 0) & (speed < sigma_x)
    if onp.count_nonzero(slow) < 2:
        return 0.0 * np.sum(step_norm)
    ratio = step_norm[slow] / speed[slow]
    dev = ratio - np.mean(ratio)
    return np.sum(dev * dev) if reduction == "sum" else np.mean(dev * dev)


def pair_terms(g, x, cfg):
    """Separation and invariance by the method named in cfg (SPEC §4)."""
    if cfg.method == "fast":
        from .fastloss import pair_terms_fast

        return pair_terms_fast(g, x, cfg.sigma_x, cfg.sigma_g, cfg.reduction)
    return (separation_loss(g, x, cfg.sigma_x, cfg.sigma_g, cfg.reduction),
            invariance_loss(g, x, cfg.sigma_x, cfg.reduction))


def sic_loss(states, positions, cfg, velocities=None, initial_state=None):
    """SPEC §4: total = sum_k lambda_k L_k; returns (total, {part name: value}).

    states (B, T, N) and positions (B, T, 2) are flattened to P = B*T points.
    The conformal-isometry term needs velocities (B, T, 2) and initial_state (N,);
    without them it is 0.
    """
    n = states.shape[-1]
    g = np.reshape(states, (-1, n))
    x = onp.reshape(onp.asarray(positions, dtype=onp.float64), (-1, 2))
    sep, inv = pair_terms(g, x, cfg)
    cap = capacity_loss(g)
    if velocities is not None and initial_state is not None:
        if cfg.lambda_coniso == 0:
            # reported, not trained: its gradient would be all zeros (the same total and
            # gradient to the bit), so it is computed outside the graph
            states, initial_state = getval(states), getval(initial_state)
        coniso = conformal_isometry_loss(states, initial_state, velocities, cfg.sigma_x,
                                         cfg.reduction)
    else:
        coniso = 0.0
    total = cfg.lambda_sep * sep + cfg.lambda_inv * inv + cfg.lambda_cap * cap
    if cfg.lambda_coniso != 0:
        total = total + cfg.lambda_coniso * coniso
    return total, dict(zip(PARTS, (sep, inv, cap, coniso)))
