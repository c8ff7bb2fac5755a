"""Velocity-modulated RNN with NormReLU (SPEC §3).

Parameters are a plain dict of arrays named as in the interchange format (SPEC §8.1):
"mlp/W0".."mlp/W{L-1}" shaped (in, out), "mlp/b0".. shaped (out,), and "g0_raw" (N,).
"""

import autograd.numpy as np
import numpy as onp


def param_names(n_layers=3):
    names = []
    for k in range(n_layers):
        names += [f"mlp/W{k}", f"mlp/b{k}"]
    return names + ["g0_raw"]


def mlp_sizes(n_units, hidden, n_layers=3):
    """SPEC §3.3: 2 -> H -> ... -> H -> N*N."""
    return [2] + [hidden] * (n_layers - 1) + [n_units * n_units]


def init_params(rng, n_units, hidden, n_layers=3):
    """SPEC §3.3-§3.4: W, b ~ Uniform(+-1/sqrt(fan_in)); g0_raw ~ Normal(0, 1)."""
    params = {}
    sizes = mlp_sizes(n_units, hidden, n_layers)
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / onp.sqrt(fan_in)
        params[f"mlp/W{k}"] = rng.uniform(-bound, bound, size=(fan_in, fan_out))
        params[f"mlp/b{k}"] = rng.uniform(-bound, bound, size=(fan_out,))
    params["g0_raw"] = rng.normal(0.0, 1.0, size=(n_units,))
    return params


def n_layers_of(params):
    return sum(1 for name in params if name.startswith("mlp/W"))


def norm_relu(x, eps=1e-8):
    """SPEC §3.2: relu(x) / max(||relu(x)||, eps), over the last axis.

    Written as sqrt(max(||r||^2, eps^2)) so that a zero vector has a zero (not NaN)
    gradient; the value is identical.
    """
    r = np.maximum(x, 0.0)
    norm = np.sqrt(np.maximum(np.sum(r * r, axis=-1, keepdims=True), eps * eps))
    return r / norm


def mlp(params, v):
    """SPEC §3.3: y = x @ W + b with ReLU between layers, none after the last."""
    n_layers = n_layers_of(params)
    h = v
    for k in range(n_layers):
        h = np.dot(h, params[f"mlp/W{k}"]) + params[f"mlp/b{k}"]
        if k < n_layers - 1:
            h = np.maximum(h, 0.0)
    return h


def transition_matrices(params, v):
    """SPEC §3.1: W(v) = reshape(MLP(v), (N, N)) row-major, for v of shape (..., 2)."""
    n = params["g0_raw"].shape[0]
    y = mlp(params, v)
    return np.reshape(y, v.shape[:-1] + (n, n))


def initial_state(params, norm_eps=1e-8):
    """SPEC §3.4: g_0 = NormReLU(g0_raw)."""
    return norm_relu(params["g0_raw"], norm_eps)


def _step(W, g, norm_eps):
    """SPEC §3.1: g_t = NormReLU(W(v_t) @ g_{t-1}) for a batch of (W, g)."""
    return norm_relu(np.einsum("bij,bj->bi", W, g), norm_eps)


def rollout_transitions(W_of_step, g0, batch_size, seq_len, norm_eps=1e-8):
    """Drive the recurrence with any transition family.

    W_of_step(t) returns the (B, N, N) matrices of step t (0-based). Returns the
    states g_1..g_T, shape (B, T, N). Used by both rollouts below and by tests that
    substitute a commuting transition family for the MLP.
    """
    g = np.tile(g0, (batch_size, 1))
    states = []
    for t in range(seq_len):
        g = _step(W_of_step(t), g, norm_eps)
        states.append(g)
    return np.stack(states, axis=1)


def rollout(params, velocities, norm_eps=1e-8):
    """SPEC §3: states for arbitrary velocities (B, T, 2); returns (g_0, states (B, T, N)).

    W(v) is computed per step for the B velocities of that step, so memory stays
    O(B N^2) for long evaluation walks.
    """
    B, T, _ = velocities.shape
    g0 = initial_state(params, norm_eps)
    states = rollout_transitions(
        lambda t: transition_matrices(params, velocities[:, t]), g0, B, T, norm_eps)
    return g0, states


def rollout_permuted(params, base, perm, norm_eps=1e-8):
    """SPEC §3 note: the same states as rollout(params, base[perm]), with W(v)
    computed once per base velocity (T times) instead of once per batch element."""
    B, T = perm.shape
    W_base = transition_matrices(params, base)  # (T, N, N)
    g0 = initial_state(params, norm_eps)
    states = rollout_transitions(lambda t: W_base[perm[:, t]], g0, B, T, norm_eps)
    return g0, states
