import numpy as np
from hypothesis import given, strategies as st

from sicref.data import make_batch, positions_from_velocities, sample_batch


@given(st.integers(1, 12), st.integers(1, 15), st.integers(0, 2**31))
def test_every_row_is_a_permutation_of_the_base(B, T, seed):
    batch = sample_batch(np.random.default_rng(seed), B, T)
    for b in range(B):
        assert sorted(batch.perm[b]) == list(range(T))
        # same multiset of velocity vectors as the base
        rows = sorted(map(tuple, batch.velocities[b]))
        assert rows == sorted(map(tuple, batch.base))


@given(st.integers(1, 12), st.integers(1, 15), st.integers(0, 2**31))
def test_permuted_trajectories_end_at_the_same_point(B, T, seed):
    batch = sample_batch(np.random.default_rng(seed), B, T)
    ends = batch.positions[:, -1]
    np.testing.assert_allclose(ends, np.broadcast_to(batch.base.sum(0), ends.shape),
                               atol=1e-12)


def test_positions_are_the_cumulative_sum():
    v = np.array([[[0.1, 0.0], [0.0, 0.2], [-0.05, 0.05]]])
    expected = np.array([[[0.1, 0.0], [0.1, 0.2], [0.05, 0.25]]])
    np.testing.assert_allclose(positions_from_velocities(v), expected)


def test_velocities_are_uniform_in_range():
    batch = sample_batch(np.random.default_rng(0), 2, 5000, vmax=0.15)
    assert np.all(np.abs(batch.base) <= 0.15)
    assert batch.base.min() < -0.14 and batch.base.max() > 0.14
    assert abs(batch.base.mean()) < 0.01


def test_identity_mode_repeats_the_base():
    batch = sample_batch(np.random.default_rng(1), 3, 7, mode="identity")
    for b in range(3):
        np.testing.assert_array_equal(batch.velocities[b], batch.base)


def test_permutation_mode_actually_permutes():
    batch = sample_batch(np.random.default_rng(1), 8, 10)
    assert any(not np.array_equal(row, np.arange(10)) for row in batch.perm)


def test_nan_velocities_are_refused():
    base = np.zeros((4, 2))
    base[2, 1] = np.nan
    try:
        make_batch(base, np.tile(np.arange(4), (2, 1)))
    except ValueError as e:
        assert "NaN" in str(e)
    else:
        raise AssertionError("NaN velocities were accepted")
