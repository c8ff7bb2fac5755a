"""AdamW, global-norm clipping, gradient accumulation, ReduceLROnPlateau (SPEC §5).

All functions are pure: they take dicts of arrays and return new ones.
"""

import math

import numpy as np


# -- gradients ---------------------------------------------------------------------------

def global_norm(grads):
    """L2 norm of all gradient entries together."""
    return math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))


def clip_by_global_norm(grads, max_norm):
    """Scale grads so that their global norm is at most max_norm (0 disables).

    Returns (clipped grads, norm before clipping).
    """
    norm = global_norm(grads)
    if max_norm <= 0 or norm <= max_norm:
        return grads, norm
    scale = max_norm / norm
    return {k: g * scale for k, g in grads.items()}, norm


def mean_of_grads(grad_list):
    """Gradient accumulation: the mean of k batches' gradients."""
    k = len(grad_list)
    return {name: sum(g[name] for g in grad_list) / k for name in grad_list[0]}


def all_finite(grads):
    return all(np.all(np.isfinite(g)) for g in grads.values())


# -- AdamW -------------------------------------------------------------------------------

def adamw_init(params):
    zeros = {k: np.zeros_like(p) for k, p in params.items()}
    return {"t": 0, "m": zeros, "v": {k: np.zeros_like(p) for k, p in params.items()}}


def adamw_update(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0):
    """One AdamW step (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments.

    p <- p - lr * weight_decay * p - lr * m_hat / (sqrt(v_hat) + eps)
    Returns (new params, new state).
    """
    t = state["t"] + 1
    new_params, m_new, v_new = {}, {}, {}
    c1 = 1.0 - beta1 ** t
    c2 = 1.0 - beta2 ** t
    for k, p in params.items():
        g = grads[k]
        m = beta1 * state["m"][k] + (1.0 - beta1) * g
        v = beta2 * state["v"][k] + (1.0 - beta2) * g * g
        m_hat = m / c1
        v_hat = v / c2
        new_params[k] = p - lr * weight_decay * p - lr * m_hat / (np.sqrt(v_hat) + eps)
        m_new[k], v_new[k] = m, v
    return new_params, {"t": t, "m": m_new, "v": v_new}


# -- ReduceLROnPlateau -------------------------------------------------------------------

def plateau_init(lr):
    return {"lr": float(lr), "best": math.inf, "bad_windows": 0,
            "window_sum": 0.0, "window_count": 0}


def plateau_update(state, loss, factor, patience, window, threshold, min_lr):
    """ReduceLROnPlateau on the total loss, averaged over windows of `window` steps.

    A window improves when its mean is below best * (1 - threshold) (for a positive
    best; best - |best| * threshold in general). After more than `patience` windows
    without improvement the learning rate is multiplied by `factor` (not below min_lr)
    and the count restarts. Returns the new state.
    """
    s = dict(state)
    s["window_sum"] += float(loss)
    s["window_count"] += 1
    if s["window_count"] < window:
        return s
    mean = s["window_sum"] / s["window_count"]
    s["window_sum"], s["window_count"] = 0.0, 0
    if s["best"] == math.inf or mean < s["best"] - abs(s["best"]) * threshold:
        s["best"], s["bad_windows"] = mean, 0
        return s
    s["bad_windows"] += 1
    if s["bad_windows"] > patience:
        s["lr"] = max(s["lr"] * factor, min_lr)
        s["bad_windows"] = 0
    return s
