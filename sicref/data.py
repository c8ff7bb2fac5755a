"""Trajectories and permutation augmentation (SPEC §2)."""

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    base: np.ndarray        # (T, 2) base velocities
    perm: np.ndarray        # (B, T) int: velocities[b, t] = base[perm[b, t]]
    velocities: np.ndarray  # (B, T, 2)
    positions: np.ndarray   # (B, T, 2): position after step t, starting at the origin


def positions_from_velocities(velocities):
    """SPEC §2.3: positions[b, t] = sum_{s<=t} velocities[b, s]."""
    return np.cumsum(velocities, axis=-2)


def sample_base(rng, seq_len, vmax=0.15):
    """SPEC §2.1: T velocities, components i.i.d. Uniform(-vmax, vmax)."""
    return rng.uniform(-vmax, vmax, size=(seq_len, 2))


def sample_permutations(rng, batch_size, seq_len, mode="permutation"):
    """SPEC §2.2/§2.4: B uniformly random permutations of 0..T-1, or identity rows."""
    if mode == "identity":
        return np.tile(np.arange(seq_len), (batch_size, 1))
    if mode != "permutation":
        raise ValueError(f"mode = {mode!r}; allowed values: ['permutation', 'identity']")
    return rng.permuted(np.tile(np.arange(seq_len), (batch_size, 1)), axis=1)


def make_batch(base, perm):
    """Assemble a Batch from base velocities and permutations; rejects non-finite input."""
    base = np.asarray(base, dtype=np.float64)
    perm = np.asarray(perm)
    if base.ndim != 2 or base.shape[1] != 2:
        raise ValueError(f"base velocities must have shape (T, 2), got {base.shape}")
    if not np.all(np.isfinite(base)):
        raise ValueError("base velocities contain NaN or inf")
    if perm.ndim != 2 or perm.shape[1] != base.shape[0]:
        raise ValueError(f"perm must have shape (B, {base.shape[0]}), got {perm.shape}")
    velocities = base[perm]
    return Batch(base, perm, velocities, positions_from_velocities(velocities))


def sample_batch(rng, batch_size, seq_len, vmax=0.15, mode="permutation"):
    """SPEC §2: one gradient step's batch."""
    base = sample_base(rng, seq_len, vmax)
    return make_batch(base, sample_permutations(rng, batch_size, seq_len, mode))
