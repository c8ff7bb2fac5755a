"""AdamW, global-norm clipping, gradient accumulation, ReduceLROnPlateau (SPEC §5).

All functions are pure: they take dicts of arrays and return new ones.
"""

import math

import numpy as np


# -- gradients ---------------------------------------------------------------------------

def global_norm(grads):
    """L2 norm of all gradient entries together."""
    return math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))


def clip_by_global_norm(grads, max_norm, norm=None):
    """Scale grads so that their global norm is at most max_norm (0 disables).

    norm: global_norm(grads) when the caller has it already. Returns (clipped grads,
    norm before clipping).
    """
    if norm is None:
        norm = global_norm(grads)
    if max_norm <= 0 or norm <= max_norm:
        return grads, norm
    scale = max_norm / norm
    return {k: g * scale for k, g in grads.items()}, norm


def mean_of_grads(grad_list):
    """Gradient accumulation: the mean of k batches' gradients (one batch: returned as is)."""
    k = len(grad_list)
    if k == 1:
        return grad_list[0]
    return {name: sum(g[name] for g in grad_list) / k for name in grad_list[0]}


def all_finite(grads):
    return all(np.all(np.isfinite(g)) for g in grads.values())


# -- AdamW -------------------------------------------------------------------------------

def adamw_init(params):
    zeros = {k: np.zeros_like(p) for k, p in params.items()}
    return {"t": 0, "m": zeros, "v": {k: np.zeros_like(p) for k, p in params.items()}}


CHUNK = 1 << 15  # elements per chunk of the AdamW update (256 KiB: stays in cache)


def _buffer(a, inplace):
    """Where an updated array is written: a itself when updating in place and a can
    take it (a C-contiguous, writable float64 array), else a new array."""
    if (inplace and isinstance(a, np.ndarray) and a.dtype == np.float64
            and a.flags.c_contiguous and a.flags.writeable):
        return a.reshape(-1)
    return np.empty(np.size(a))


def adamw_update(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                 weight_decay=0.0, inplace=False):
    """One AdamW step (Loshchilov & Hutter): decoupled weight decay, bias-corrected moments.

        m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g g,
        p <- p - (lr weight_decay) p - lr (m / c1) / (sqrt(v / c2) + eps),
        c1 = 1 - beta1^t, c2 = 1 - beta2^t.

    Returns (new params, new state); the inputs are not modified. The arithmetic is
    elementwise in exactly this order, done chunk by chunk so that the dozen passes
    over a large parameter stay in cache (the MLP's last layer has N^2 H entries).

    inplace=True writes the new parameters and moments into the arrays of params and
    state (those that are C-contiguous float64 and writable; others get new arrays) and
    returns dicts holding them: the same bits, with no new arrays to write to (about 2
    ms of a `laptop` step, docs/performance.md). The training loop uses it; anything
    else holding those arrays sees them change.
    """
    t = state["t"] + 1
    new_params, m_new, v_new = {}, {}, {}
    c1 = 1.0 - beta1 ** t
    c2 = 1.0 - beta2 ** t
    step_buf, denom_buf, decay_buf = np.empty(CHUNK), np.empty(CHUNK), np.empty(CHUNK)
    for k, p0 in params.items():
        shape = np.shape(p0)
        out_p = _buffer(p0, inplace)
        out_m = _buffer(state["m"][k], inplace)
        out_v = _buffer(state["v"][k], inplace)
        # out_* may be the inputs' own memory: every input chunk below is read before
        # (or, elementwise, while) the same chunk of its output is written
        flat_p = np.asarray(p0, dtype=np.float64).reshape(-1)
        flat_g = np.asarray(grads[k], dtype=np.float64).reshape(-1)
        flat_m0 = np.asarray(state["m"][k], dtype=np.float64).reshape(-1)
        flat_v0 = np.asarray(state["v"][k], dtype=np.float64).reshape(-1)
        n = flat_p.size
        for s in range(0, n, CHUNK):
            e = min(s + CHUNK, n)
            g, m, v, q = flat_g[s:e], out_m[s:e], out_v[s:e], out_p[s:e]
            step, denom, decay = step_buf[:e - s], denom_buf[:e - s], decay_buf[:e - s]
            np.multiply(beta1, flat_m0[s:e], out=m)
            np.multiply(1.0 - beta1, g, out=step)
            m += step
            np.multiply(beta2, flat_v0[s:e], out=v)
            np.multiply(1.0 - beta2, g, out=step)
            step *= g
            v += step
            np.divide(v, c2, out=denom)
            np.sqrt(denom, out=denom)
            denom += eps
            np.divide(m, c1, out=step)
            step *= lr
            step /= denom
            np.multiply(lr * weight_decay, flat_p[s:e], out=decay)
            np.subtract(flat_p[s:e], decay, out=q)
            q -= step
        new_params[k] = out_p.reshape(shape)
        m_new[k], v_new[k] = out_m.reshape(shape), out_v.reshape(shape)
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
