"""Velocity-modulated RNN with NormReLU (SPEC §3).

Parameters are a plain dict of arrays named as in the interchange format (SPEC §8.1):
"mlp/W0".."mlp/W{L-1}" shaped (in, out), "mlp/b0".. shaped (out,), and "g0_raw" (N,).
"""

import autograd.numpy as np
import numpy as onp
from autograd.extend import defvjp_argnums, primitive


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
        h = np.matmul(h, params[f"mlp/W{k}"]) + params[f"mlp/b{k}"]
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
    W_base = transition_matrices(params, base)  # (T, N, N)
    g0 = initial_state(params, norm_eps)
    pre = permuted_preactivations(W_base, g0, onp.asarray(perm), norm_eps)
    return g0, norm_relu(pre, norm_eps)


# -- the permuted recurrence as one primitive --------------------------------------------
#
# The forward pass is the plain loop (the same arithmetic as rollout_transitions, so
# the states are bit-identical). Autograd's gradient of that loop scatters B outer
# products of N x N into W_base at every step (np.add.at) and keeps every step's B
# gathered matrices alive until the backward pass (about 1 GB at the paper's size). The
# hand-derived backward pass below keeps only the pre-activations, and sums the
# gradient of W_base once, after the backward loop, in one product per base velocity.

@primitive
def permuted_preactivations(W_base, g0, perm, norm_eps=1e-8):
    """SPEC §3.1 with v_t = base[perm[:, t]]: the pre-activations
    a_t = W_base[perm[:, t]] @ g_{t-1}, g_t = NormReLU(a_t), g_0 shared; (B, T, N)."""
    B, T = perm.shape
    g = onp.tile(g0, (B, 1))
    pre = onp.empty((B, T, len(g0)))
    for t in range(T):
        pre[:, t] = onp.einsum("bij,bj->bi", W_base[perm[:, t]], g)
        g = norm_relu(pre[:, t], norm_eps)
    return pre


def _permuted_preactivations_vjp(argnums, pre, args, kwargs):
    """Backpropagation through time for permuted_preactivations (hand-derived).

    With r = relu(a_t), n = sqrt(max(||r||^2, eps^2)), g_t = r / n (SPEC §3.2):
        r_bar = (g_bar - w (g_bar . g_t) g_t) / n,   a_bar = r_bar relu'(a_t),
        g_{t-1}_bar = W_t^T a_bar,   dW[k] = sum over perm[b, t] == k of a_bar g_{t-1}^T,
    w = 1 where ||r|| > eps, else 0. At ties (||r|| = eps, a_i = 0) autograd's max()
    passes half the cotangent; so do w and relu' here, so both gradients agree even at
    collapsed (all-zero) states.
    """
    W_base, g0, perm = args[:3]
    norm_eps = args[3] if len(args) > 3 else kwargs.get("norm_eps", 1e-8)

    def vjp(pre_bar):
        B, T, N = pre.shape
        eps2 = norm_eps * norm_eps
        r = onp.maximum(pre, 0.0)
        sq = onp.sum(r * r, axis=-1, keepdims=True)
        norm = onp.sqrt(onp.maximum(sq, eps2))
        states = r / norm
        through_norm = (sq > eps2) + 0.5 * (sq == eps2)
        relu_grad = (pre > 0) + 0.5 * (pre == 0)
        a_bar = onp.empty_like(pre)  # total cotangent of each pre-activation
        g_bar = onp.zeros((B, N))  # cotangent of g_t through step t + 1
        for t in range(T - 1, -1, -1):
            g_t = states[:, t]
            radial = through_norm[:, t] * onp.sum(g_bar * g_t, axis=-1, keepdims=True)
            a_bar[:, t] = pre_bar[:, t] + (g_bar - radial * g_t) / norm[:, t] * relu_grad[:, t]
            g_bar = onp.matmul(a_bar[:, t, None, :], W_base[perm[:, t]])[:, 0]
        previous = onp.concatenate([onp.tile(g0, (B, 1, 1)), states[:, :-1]], axis=1)
        grads = {0: _sum_outer_by_index(perm, a_bar, previous, len(W_base)),
                 1: onp.sum(g_bar, axis=0)}
        return tuple(grads[i] for i in argnums)

    return vjp


def _sum_outer_by_index(perm, u, v, n_base):
    """dW[k] = sum over (b, t) with perm[b, t] == k of outer(u[b, t], v[b, t])."""
    N = u.shape[-1]
    k = perm.ravel()
    order = onp.argsort(k, kind="stable")
    u, v = u.reshape(-1, N)[order], v.reshape(-1, N)[order]
    counts = onp.bincount(k, minlength=n_base)
    if onp.all(counts == counts[0]):  # every row of perm a permutation: one product
        c = counts[0]
        return onp.matmul(onp.swapaxes(u.reshape(n_base, c, N), 1, 2), v.reshape(n_base, c, N))
    dW = onp.zeros((n_base, N, N))
    ends = onp.cumsum(counts)
    for j in onp.flatnonzero(counts):
        s = ends[j] - counts[j]
        dW[j] = u[s:ends[j]].T @ v[s:ends[j]]
    return dW


defvjp_argnums(permuted_preactivations, _permuted_preactivations_vjp)
