"""Tests for sicref.gridness, sicref.lattice and sicref.modules (SPEC §7.2-§7.6)."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats

from sicref.gridness import (
    ROTATION_ANGLES,
    GridScore,
    autocorrelogram,
    field_shuffles,
    find_modules,
    grid_score,
    grid_scores,
    gridness_from_correlations,
    is_grid,
    lattice_period_orientation,
    ratemaps,
    ring_masks,
    rotated_autocorrelograms,
    rotational_correlations,
    shuffle_threshold,
    spectral_period,
)
from sicref.modules import drop_small_modules, module_min_size

N = 32


# --- synthetic maps -------------------------------------------------------------------


def hexagonal_map(spacing, orientation, phases=(0.0, 0.0, 0.0), shift=(0.0, 0.0), n=N):
    """Fields on a hexagonal lattice: three plane waves 60 degrees apart.

    spacing: distance between neighbouring fields in bins; orientation: angle of a lattice
    vector in degrees. The wave vectors point 30 degrees off the lattice vectors and have
    |k| = 4 pi / (sqrt(3) spacing). shift translates the pattern by (dx, dy) bins.
    """
    y, x = np.mgrid[0:n, 0:n].astype(float)
    x, y = x - shift[0], y - shift[1]
    k = 4 * np.pi / (np.sqrt(3) * spacing)
    angles = np.radians(orientation + 30 + 60 * np.arange(3))
    return sum(np.cos(k * (np.cos(a) * x + np.sin(a) * y) + p) for a, p in zip(angles, phases))


def square_map(spacing, n=N):
    y, x = np.mgrid[0:n, 0:n].astype(float)
    return np.cos(2 * np.pi * x / spacing) + np.cos(2 * np.pi * y / spacing)


def smooth_noise(rng, sigma=2.0, n=N):
    return ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma)


def place_field(centre, width, n=N):
    y, x = np.mgrid[0:n, 0:n].astype(float)
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * width**2))


def angle_difference_60(a, b):
    """Distance between two orientations on the 60-degree circle."""
    return abs((a - b + 30) % 60 - 30)


# --- independent, loop-based scorers ----------------------------------------------------


def loop_autocorrelogram(m, min_overlap):
    """Pearson r over the finite pairs at each lag, one lag at a time."""
    n = m.shape[0]
    sac = np.full((2 * n - 1, 2 * n - 1), np.nan)
    for dy in range(-(n - 1), n):
        for dx in range(-(n - 1), n):
            a = m[max(0, -dy):n - max(0, dy), max(0, -dx):n - max(0, dx)].ravel()
            b = m[max(0, dy):n - max(0, -dy), max(0, dx):n - max(0, -dx)].ravel()
            both = np.isfinite(a) & np.isfinite(b)
            if both.sum() < max(min_overlap, 2):
                continue
            a, b = a[both] - a[both].mean(), b[both] - b[both].mean()
            if a @ a > 1e-12 and b @ b > 1e-12:
                sac[n - 1 + dy, n - 1 + dx] = (a @ b) / np.sqrt((a @ a) * (b @ b))
    return sac


def loop_bilinear_rotation(sac, angle):
    """Rotate about the centre, bilinear; NaN where any bin used is NaN or outside.

    A bin with a weight of round-off size (1e-9) is not used: rotating by 90 degrees
    lands a hair off the grid points.
    """
    size = sac.shape[0]
    centre = (size - 1) / 2
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    out = np.full(sac.shape, np.nan)
    for i in range(size):
        for j in range(size):
            u = c * (i - centre) + s * (j - centre) + centre
            v = -s * (i - centre) + c * (j - centre) + centre
            if not (-1e-9 <= u <= size - 1 + 1e-9 and -1e-9 <= v <= size - 1 + 1e-9):
                continue
            u, v = min(max(u, 0.0), size - 1.0), min(max(v, 0.0), size - 1.0)
            i0, j0 = min(int(u), size - 2), min(int(v), size - 2)
            fu, fv = u - i0, v - j0
            corners = ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)),
                       (0, 1, (1 - fu) * fv), (1, 1, fu * fv))
            out[i, j] = sum(w * sac[i0 + di, j0 + dj] for di, dj, w in corners if w > 1e-9)
    return out


def loop_score60(m, convention):
    """Best-ring min-max score60, written out one ring and one angle at a time.

    convention "sicref": this package's choices (lags with >= 20 pairs, bilinear rotation
    with NaN propagation, Pearson r inside the ring). convention "published": Banino et
    al. 2018 / DeepMind grid-cells scores.py (every lag kept, undefined lags set to 0,
    cubic-spline rotation, correlation centred on and scaled by the unrotated ring).
    """
    n = m.shape[0]
    published = convention == "published"
    sac = loop_autocorrelogram(m, 1 if published else 20)
    if published:
        sac = np.nan_to_num(sac)
    rotated = {
        a: ndimage.rotate(sac, a, reshape=False) if published else loop_bilinear_rotation(sac, a)
        for a in (30, 60, 90, 120, 150)
    }
    lag = np.arange(-(n - 1), n)
    radius = np.hypot(lag[:, None], lag[None, :])
    best = -np.inf
    for outer in np.linspace(0.4, 1.0, 10):
        ring = (radius <= outer * n) & ~(radius <= 0.2 * n)
        c = {}
        for a, r in rotated.items():
            x, y = sac[ring], r[ring]
            if published:
                mean = x.mean()
                c[a] = np.mean((x - mean) * (y - mean)) / (np.mean((x - mean) ** 2) + 1e-5)
            else:
                ok = np.isfinite(x) & np.isfinite(y)
                c[a] = np.corrcoef(x[ok], y[ok])[0, 1]
        best = max(best, min(c[60], c[120]) - max(c[30], c[90], c[150]))
    return best


def convention_maps():
    rng = np.random.default_rng(7)
    holes = hexagonal_map(8, 10, (0.3, 1.0, 2.0))
    holes[rng.random(holes.shape) < 0.05] = np.nan
    holes[:8, :8] = np.nan
    patch = np.full((N, N), np.nan)
    patch[4:20, 6:22] = hexagonal_map(7, 25, n=16)  # lags past 16 bins have under 20 pairs
    return {
        "hex 8": hexagonal_map(8, 10, (0.3, 1.0, 2.0)),
        "hex 12": hexagonal_map(12, 40, (1.0, 2.0, 0.5)),
        "square 9": square_map(9),
        "noise": smooth_noise(rng),
        "noise sigma 3": smooth_noise(rng, sigma=3.0),
        "hex with holes": holes,
        "hex in a small visited patch": patch,
    }


# --- ratemaps (SPEC §7.2) -----------------------------------------------------------------


def test_ratemap_is_the_mean_activity_per_bin_and_nan_where_unvisited():
    positions = [(-0.9, -0.9), (-0.8, -0.6), (0.1, -0.9), (0.9, 0.9)]
    activations = [(1.0, 10.0), (3.0, 20.0), (5.0, 0.0), (7.0, 1.0)]
    maps = ratemaps(positions, activations, arena_size=2.0, nbins=4)
    expected = np.full((2, 4, 4), np.nan)
    expected[:, 0, 0] = (2.0, 15.0)  # [unit, y bin, x bin]
    expected[:, 0, 2] = (5.0, 0.0)
    expected[:, 3, 3] = (7.0, 1.0)
    np.testing.assert_array_equal(maps, expected)


def test_positions_on_or_just_outside_the_walls_fall_in_the_edge_bins():
    positions = [(-1.0, -1.0), (1.0, 1.0), (1.0 + 1e-9, -1.0 - 1e-9), (0.0, 0.0)]
    maps = ratemaps(positions, np.arange(4.0)[:, None], arena_size=2.0, nbins=4)[0]
    assert maps[0, 0] == 0.0 and maps[3, 3] == 1.0 and maps[0, 3] == 2.0
    assert maps[2, 2] == 3.0  # the centre belongs to the bin above and right of it
    assert np.isnan(maps).sum() == 12


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nbins=st.integers(2, 12))
def test_ratemaps_match_scipy_binned_statistic(seed, nbins):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(-1.4, 1.4, size=(200, 2))
    activations = rng.random((200, 3))
    maps = ratemaps(positions, activations, arena_size=3.0, nbins=nbins)
    expected = stats.binned_statistic_2d(
        positions[:, 0], positions[:, 1], activations.T, "mean",
        bins=nbins, range=[(-1.5, 1.5)] * 2,
    ).statistic
    np.testing.assert_allclose(maps, np.swapaxes(expected, 1, 2), rtol=1e-12, equal_nan=True)


def test_ratemaps_reject_mismatched_shapes():
    with pytest.raises(ValueError):
        ratemaps(np.zeros((5, 3)), np.zeros((5, 2)), arena_size=1.0)
    with pytest.raises(ValueError):
        ratemaps(np.zeros((5, 2)), np.zeros((4, 2)), arena_size=1.0)


# --- autocorrelogram (SPEC §7.3) ----------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(6, 20), hole_fraction=st.floats(0.0, 0.3))
def test_autocorrelogram_is_one_at_the_centre_and_point_symmetric(seed, n, hole_fraction):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, n))
    m[rng.random((n, n)) < hole_fraction] = np.nan
    sac = autocorrelogram(m, min_overlap=3)
    assert sac.shape == (2 * n - 1, 2 * n - 1)
    assert sac[n - 1, n - 1] == pytest.approx(1.0)
    np.testing.assert_allclose(sac, sac[::-1, ::-1], atol=1e-12, equal_nan=True)


def test_autocorrelogram_equals_a_loop_over_lags():
    rng = np.random.default_rng(3)
    m = rng.standard_normal((11, 11)) + 5.0
    m[rng.random(m.shape) < 0.2] = np.nan
    np.testing.assert_allclose(
        autocorrelogram(m, min_overlap=4), loop_autocorrelogram(m, 4), atol=1e-10, equal_nan=True
    )


def test_autocorrelogram_leaves_lags_with_under_20_pairs_undefined():
    sac = autocorrelogram(smooth_noise(np.random.default_rng(0)))
    assert np.isnan(sac[0, 0]) and np.isnan(sac[-1, -1])  # lag (31, 31): one pair
    assert np.isfinite(sac[N - 1, -1])  # lag (31, 0): 32 pairs
    assert np.isfinite(sac[N - 1 + 12, -1]) and np.isnan(sac[N - 1 + 13, -1])  # 20 vs 19 pairs


def test_autocorrelogram_of_a_stack_is_the_stack_of_autocorrelograms():
    rng = np.random.default_rng(1)
    maps = np.stack([smooth_noise(rng, n=12) for _ in range(3)])
    one_by_one = np.stack([autocorrelogram(m) for m in maps])
    np.testing.assert_allclose(autocorrelogram(maps), one_by_one, equal_nan=True)


# --- grid scores (SPEC §7.4) --------------------------------------------------------------


def test_ring_masks_are_annuli_in_fractions_of_the_half_width():
    ring = ring_masks(10, inner=0.2, outers=(0.5,))[0]
    centre = 9
    assert ring.shape == (19, 19)
    assert not ring[centre, centre + 2] and ring[centre, centre + 3]  # inner 2: excluded
    assert ring[centre + 3, centre + 4] and not ring[centre, centre + 6]  # outer 5: included


def test_rotated_autocorrelogram_is_nan_wherever_it_would_interpolate_a_nan():
    rng = np.random.default_rng(6)
    sac = rng.standard_normal((15, 15))
    sac[rng.random(sac.shape) < 0.1] = np.nan
    rotated = rotated_autocorrelograms(sac)
    for angle, r in zip(ROTATION_ANGLES, rotated):
        expected = loop_bilinear_rotation(sac, angle)
        np.testing.assert_allclose(r, expected, atol=1e-12, equal_nan=True)


def test_score_formulas_follow_spec():
    c = dict(zip(ROTATION_ANGLES, (0.1, -0.2, 0.9, 0.3, 0.7, -0.4, 0.2)))
    correlations = np.array([c[a] for a in ROTATION_ANGLES])
    score60, score60_mean, score90 = gridness_from_correlations(correlations)
    assert score60 == pytest.approx(min(0.9, 0.7) - max(0.1, 0.3, 0.2))
    assert score60_mean == pytest.approx((0.9 + 0.7) / 2 - (0.1 + 0.3 + 0.2) / 3)
    assert score90 == pytest.approx(0.3 - (-0.2 - 0.4) / 2)


@settings(max_examples=25, deadline=None)
@given(
    spacing=st.floats(6.0, 14.0),
    orientation=st.floats(0.0, 60.0, exclude_max=True),
    phases=st.tuples(*[st.floats(0.0, 2 * np.pi)] * 3),
)
def test_clean_hexagonal_pattern_is_a_grid_with_its_period_and_orientation(
    spacing, orientation, phases
):
    score = grid_score(hexagonal_map(spacing, orientation, phases))
    assert score.score60 > 1.0
    # Sub-bin peak refinement: well inside the one bin and 3 degrees asked for.
    assert abs(score.period - spacing) < 0.25
    assert angle_difference_60(score.orientation, orientation) < 1.0
    assert 0.0 <= score.orientation < 60.0


@settings(max_examples=15, deadline=None)
@given(
    spacing=st.floats(6.0, 14.0),
    shift=st.tuples(st.floats(-20.0, 20.0), st.floats(-20.0, 20.0)),
    turn=st.floats(0.0, 60.0),
)
def test_translating_or_rotating_a_hexagonal_pattern_keeps_score60(spacing, shift, turn):
    reference = grid_score(hexagonal_map(spacing, 7.0)).score60
    assert abs(grid_score(hexagonal_map(spacing, 7.0, shift=shift)).score60 - reference) < 0.1
    assert abs(grid_score(hexagonal_map(spacing, 7.0 + turn)).score60 - reference) < 0.1


@pytest.mark.parametrize("spacing", [6.0, 9.0, 12.0])
def test_square_lattice_scores_high_on_score90_and_negative_on_score60(spacing):
    score = grid_score(square_map(spacing))
    assert score.score90 > 0.5
    assert score.score60 < 0.0


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_smooth_noise_is_not_a_grid_on_average(sigma):
    rng = np.random.default_rng(11)
    scores = grid_scores(np.stack([smooth_noise(rng, sigma) for _ in range(48)]))
    assert abs(np.median(scores.score60)) < 0.25
    assert abs(np.median(scores.score90)) < 0.25
    assert np.mean(np.abs(scores.score60) < 0.5) > 0.75


@settings(max_examples=15, deadline=None)
@given(centre=st.tuples(st.floats(4.0, 28.0), st.floats(4.0, 28.0)), width=st.floats(1.5, 6.0))
def test_a_single_place_field_is_not_a_grid(centre, width):
    score = grid_score(place_field(centre, width))
    assert score.score60 < 0.3


@pytest.mark.parametrize("spacing, orientation", [(7.0, 5.0), (10.0, 33.0), (13.0, 50.0)])
def test_unvisited_holes_change_score60_little(spacing, orientation):
    rng = np.random.default_rng(int(spacing))
    clean = hexagonal_map(spacing, orientation, (0.5, 1.5, 2.5))
    holes, corner = clean.copy(), clean.copy()
    holes[rng.random(clean.shape) < 0.05] = np.nan
    corner[:10, :10] = np.nan
    reference = grid_score(clean).score60
    assert abs(grid_score(holes).score60 - reference) < 0.2
    assert abs(grid_score(corner).score60 - reference) < 0.2


def test_reported_ring_maximises_score60_and_carries_the_other_scores():
    rng = np.random.default_rng(2)
    maps = np.stack([hexagonal_map(9.0, 20.0), smooth_noise(rng), square_map(8.0)])
    correlations = rotational_correlations(autocorrelogram(maps), ring_masks(N))
    per_ring = gridness_from_correlations(correlations)
    scores = grid_scores(maps)
    best = np.argmax(per_ring[0], axis=1)
    np.testing.assert_allclose(scores.score60, per_ring[0].max(axis=1))
    np.testing.assert_allclose(scores.score60_mean, per_ring[1][np.arange(3), best])
    np.testing.assert_allclose(scores.score90, per_ring[2][np.arange(3), best])
    np.testing.assert_allclose(scores.ring[:, 1], np.linspace(0.4, 1.0, 10)[best])
    assert np.all(scores.ring[:, 0] == 0.2)


def test_batch_scores_equal_single_map_scores():
    rng = np.random.default_rng(4)
    maps = np.stack([hexagonal_map(8.0, 12.0), smooth_noise(rng), place_field((10, 20), 3.0)])
    batch = grid_scores(maps)
    names = ("score60", "score60_mean", "score90", "period", "orientation")
    for u, m in enumerate(maps):
        single = grid_score(m)
        assert isinstance(single, GridScore)
        np.testing.assert_allclose(
            [getattr(single, name) for name in names] + list(single.ring),
            [getattr(batch, name)[u] for name in names] + list(batch.ring[u]),
            equal_nan=True,
        )


@pytest.mark.parametrize(
    "name, m",
    [
        ("constant", np.full((N, N), 0.1)),  # its mean is 0.1 + 1e-17: no exact cancellation
        ("all unvisited", np.full((N, N), np.nan)),
        ("one visited bin", np.where(np.arange(N * N).reshape(N, N) == 100, 1.0, np.nan)),
        ("all zeros", np.zeros((N, N))),
        ("constant, holes", np.where(np.random.default_rng(0).random((N, N)) < 0.3, np.nan, 0.7)),
    ],
)
def test_degenerate_maps_give_nan_without_warnings(name, m):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = grid_score(m)
        spectral = spectral_period(m)
        shuffled = shuffle_threshold(m, np.random.default_rng(0), n_shuffles=5)
        sac = autocorrelogram(m)
    values = (score.score60, score.score60_mean, score.score90, score.period, score.orientation)
    assert np.all(np.isnan(values + score.ring)), name
    assert np.isnan(spectral) and np.isnan(shuffled)
    assert np.all(np.isnan(sac)), name


# --- the published convention -------------------------------------------------------------


@pytest.mark.parametrize("name", list(convention_maps()))
def test_grid_score_equals_a_loop_implementation_of_its_convention(name):
    m = convention_maps()[name]
    assert grid_score(m).score60 == pytest.approx(loop_score60(m, "sicref"), abs=1e-9)


@pytest.mark.parametrize("name", list(convention_maps()))
def test_grid_score_agrees_with_the_published_convention(name):
    m = convention_maps()[name]
    assert grid_score(m).score60 == pytest.approx(loop_score60(m, "published"), abs=0.05)


# --- period and orientation (SPEC §7.5) ---------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    spacing=st.floats(6.0, 14.0),
    orientation=st.floats(0.0, 60.0),
    phases=st.tuples(*[st.floats(0.0, 2 * np.pi)] * 3),
)
def test_spectral_period_agrees_with_the_lattice_spacing(spacing, orientation, phases):
    m = hexagonal_map(spacing, orientation, phases)
    assert abs(spectral_period(m) - spacing) < 1.0
    assert abs(spectral_period(m) - grid_score(m).period) < 1.0


def test_spectral_period_of_a_stack_has_one_value_per_map():
    maps = np.stack([hexagonal_map(s, 0.0) for s in (6.0, 9.0, 12.0)])
    np.testing.assert_allclose(spectral_period(maps), [6.0, 9.0, 12.0], atol=1.0)


def test_a_single_pair_of_sac_peaks_is_no_lattice():
    sac = np.full((21, 21), -0.1)
    sac[10, 10] = 1.0
    sac[10, 15] = sac[10, 5] = 0.5  # point-symmetric, like every SAC: bands, not a lattice
    assert np.isnan(lattice_period_orientation(sac)).all()
    sac[14, 12] = sac[6, 8] = 0.4
    median_of_four = (np.hypot(2, 4) + 5) / 2
    assert lattice_period_orientation(sac)[0] == pytest.approx(median_of_four)


def test_orientation_is_wrap_safe_near_zero_and_sixty_degrees():
    for orientation in (0.0, 0.5, 59.5):
        score = grid_score(hexagonal_map(10.0, orientation))
        assert angle_difference_60(score.orientation, orientation) < 1.0
        assert 0.0 <= score.orientation < 60.0


# --- modules (SPEC §7.6) ------------------------------------------------------------------


def module_population(rng, n_modules, size, noise, ratio=1.4, smallest=0.3):
    truth = np.repeat(np.arange(n_modules), size)
    periods = smallest * ratio ** truth * np.exp(noise * rng.standard_normal(truth.size))
    return periods, truth


@pytest.mark.parametrize("n_modules", [1, 2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_find_modules_recovers_modules_with_ratio_1_4_and_5_percent_noise(n_modules, seed):
    rng = np.random.default_rng(seed)
    periods, truth = module_population(rng, n_modules, size=int(rng.integers(20, 60)), noise=0.05)
    labels, module_periods = find_modules(periods)
    assert len(module_periods) == n_modules
    assert np.mean(labels == truth) > 0.95
    np.testing.assert_allclose(module_periods, 0.3 * 1.4 ** np.arange(n_modules), rtol=0.05)


@pytest.mark.parametrize(
    "sizes, noise", [((60, 20), 0.05), ((20, 60), 0.05), ((40, 40, 40), 0.07)]
)
def test_find_modules_separates_unequal_and_noisier_modules(sizes, noise):
    rng = np.random.default_rng(sum(sizes))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    periods = 0.3 * 1.4**truth * np.exp(noise * rng.standard_normal(truth.size))
    labels, module_periods = find_modules(periods)
    assert len(module_periods) == len(sizes)
    assert np.mean(labels == truth) > 0.9


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(20, 300))
def test_find_modules_does_not_split_a_single_module_with_10_percent_noise(seed, size):
    periods, _ = module_population(np.random.default_rng(seed), 1, size, noise=0.10)
    labels, module_periods = find_modules(periods)
    assert len(module_periods) == 1
    assert np.all(labels == 0)


def test_find_modules_gives_units_without_a_period_label_minus_one():
    periods = np.array([0.3, np.nan, 0.31, 0.0, 0.29, -1.0, np.inf, 0.3])
    labels, module_periods = find_modules(periods)
    np.testing.assert_array_equal(labels, [0, -1, 0, -1, 0, -1, -1, 0])
    assert module_periods == pytest.approx([0.3], rel=0.01)
    labels, module_periods = find_modules(np.full(4, np.nan))
    assert np.all(labels == -1) and module_periods.size == 0


def test_find_modules_does_not_depend_on_the_unit_of_period():
    periods, _ = module_population(np.random.default_rng(9), 3, 30, noise=0.05)
    labels_m, periods_m = find_modules(periods)
    labels_bins, periods_bins = find_modules(periods * 32 / 2.0)
    np.testing.assert_array_equal(labels_m, labels_bins)
    np.testing.assert_allclose(periods_bins, periods_m * 16)


# --- shuffle test and threshold (SPEC §7.4, §10) ----------------------------------------


def test_field_shuffles_keep_the_unvisited_bins_and_the_peak():
    m = hexagonal_map(9.0, 15.0)
    m[:6, :6] = np.nan
    shuffles = field_shuffles(m, np.random.default_rng(0), n_shuffles=10)
    assert shuffles.shape == (10, N, N)
    assert np.array_equal(np.isnan(shuffles), np.broadcast_to(np.isnan(m), shuffles.shape))
    assert np.all(np.nanmax(shuffles, axis=(1, 2)) <= np.nanmax(m))


def test_a_clean_grid_beats_its_shuffle_threshold_and_the_threshold_is_reproducible():
    m = hexagonal_map(9.0, 15.0, (0.2, 0.4, 0.1))
    threshold = shuffle_threshold(m, np.random.default_rng(5), n_shuffles=60)
    assert grid_score(m).score60 > threshold
    assert threshold == shuffle_threshold(m, np.random.default_rng(5), n_shuffles=60)


def test_is_grid_needs_the_threshold_and_where_given_the_shuffle_threshold():
    score60 = np.array([0.5, 0.2, np.nan, 0.9])
    np.testing.assert_array_equal(is_grid(score60), [True, False, False, True])
    shuffle_thresholds = [0.6, 0.0, 0.0, 0.4]
    np.testing.assert_array_equal(
        is_grid(score60, shuffle_thresholds=shuffle_thresholds), [False, False, False, True]
    )


# --- small groups left out of the module count --------------------------------------------


def test_module_min_size_is_a_fraction_of_the_grid_units_with_a_floor():
    assert module_min_size(109, 0.1) == 11  # ceil(10.9)
    assert module_min_size(100, 0.1) == 10
    assert module_min_size(12, 0.1) == 3
    assert module_min_size(0, 0.1) == 3
    assert module_min_size(50, 0.0) == 3
    with pytest.raises(ValueError, match="fraction"):
        module_min_size(10, 1.0)


def test_a_few_stray_units_are_left_out_and_the_large_module_is_untouched():
    # 99 units of one module at 0.73 m and two tight groups of 4 and 6 noisy units at
    # 0.32 and 0.46 m (the pattern of a caught lattice, docs/experiments.md section 4)
    rng = np.random.default_rng(3)
    big = 0.73 * np.exp(0.02 * rng.standard_normal(99))
    periods = np.concatenate([np.full(4, 0.32), np.full(6, 0.46), big])
    labels, module_periods = find_modules(periods)
    assert len(module_periods) == 3  # find_modules itself reports the two groups
    kept_labels, kept, (small_periods, small_sizes) = drop_small_modules(
        labels, module_periods, module_min_size(len(periods), 0.1))
    assert kept == pytest.approx([np.exp(np.median(np.log(big)))])
    np.testing.assert_array_equal(kept_labels, np.r_[np.full(10, -1), np.zeros(99, int)])
    assert small_periods == pytest.approx([0.32, 0.46]) and list(small_sizes) == [4, 6]


def test_modules_at_or_above_the_minimum_are_all_kept_and_renumbered():
    labels = np.array([-1, 0, 0, 0, 1, 1, 2, 2, 2, 2, -1])
    periods = np.array([0.3, 0.42, 0.59])
    new, kept, (small, sizes) = drop_small_modules(labels, periods, 3)
    np.testing.assert_array_equal(new, [-1, 0, 0, 0, -1, -1, 1, 1, 1, 1, -1])
    assert kept == pytest.approx([0.3, 0.59])
    assert small == pytest.approx([0.42]) and list(sizes) == [2]
    same, all_kept, (none, _) = drop_small_modules(labels, periods, 1)
    np.testing.assert_array_equal(same, labels)
    assert all_kept == pytest.approx(periods) and none.size == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(15, 60), min_size=1, max_size=3))
def test_real_modules_of_comparable_size_survive_the_default_minimum(seed, sizes):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    periods = 0.3 * 1.4**truth * np.exp(0.03 * rng.standard_normal(truth.size))
    labels, module_periods = find_modules(periods)
    new, kept, _ = drop_small_modules(labels, module_periods,
                                      module_min_size(len(periods), 0.1))
    # every module here holds at least 15 of at most 180 units, above 10 %
    assert len(kept) == len(sizes)
    np.testing.assert_array_equal(new, labels)


def test_drop_small_modules_with_no_module_at_all():
    # grid units whose periods are all undefined: find_modules gives no module
    labels, module_periods = find_modules(np.array([np.nan, np.nan, np.inf]))
    new, kept, (small, sizes) = drop_small_modules(labels, module_periods, 3)
    np.testing.assert_array_equal(new, [-1, -1, -1])
    assert kept.size == 0 and small.size == 0 and sizes.size == 0
    new, kept, _ = drop_small_modules(np.array([], int), np.array([]), 3)
    assert new.size == 0 and kept.size == 0


def test_spatial_coherence_hand_computed():
    from sicref.gridness import spatial_coherence
    m = np.array([[0.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    # neighbour means by hand: a corner sees two edges (1) and the centre (2): 4/3; an
    # edge sees two corners, two edges and the centre: 4/5; the centre sees 4 ones: 1/2
    x = [0, 0, 0, 0, 1, 1, 1, 1, 2]
    y = [4 / 3] * 4 + [4 / 5] * 4 + [1 / 2]
    assert spatial_coherence(m) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_spatial_coherence_ignores_unvisited_bins_and_is_nan_for_a_flat_map():
    from sicref.gridness import spatial_coherence
    m = np.array([[0.0, 1.0, np.nan], [2.0, 4.0, np.nan], [np.nan, np.nan, np.nan]])
    # visited bins 0, 1, 2, 4 are each other's neighbours: the mean of the other three
    x = [0.0, 1.0, 2.0, 4.0]
    y = [7 / 3, 6 / 3, 5 / 3, 3 / 3]
    assert spatial_coherence(m) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert np.isnan(spatial_coherence(np.ones((5, 5))))
    batch = np.stack([m, np.ones((3, 3))])
    out = spatial_coherence(batch)
    assert out.shape == (2,) and out[0] == pytest.approx(spatial_coherence(m))
    assert np.isnan(out[1])


@given(seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_spatial_coherence_is_invariant_to_affine_rescaling_of_rates(seed):
    from sicref.gridness import spatial_coherence
    rng = np.random.default_rng(seed)
    m = ndimage.gaussian_filter(rng.normal(size=(16, 16)), 1.5)
    m[rng.random((16, 16)) < 0.1] = np.nan
    a, b = rng.uniform(0.1, 10), rng.uniform(-5, 5)
    assert spatial_coherence(a * m + b) == pytest.approx(spatial_coherence(m), abs=1e-9)


# -- split-half reliability ---------------------------------------------------------------

def test_split_half_reliability_hand_computed():
    from sicref.gridness import split_half_reliability
    # arena of side 2, 2 x 2 bins: centres (-0.5, -0.5) bin 0, (0.5, -0.5) bin 1,
    # (-0.5, 0.5) bin 2, (0.5, 0.5) bin 3 (row-major, [y, x])
    c = {0: (-0.5, -0.5), 1: (0.5, -0.5), 2: (-0.5, 0.5), 3: (0.5, 0.5)}
    # walk 0 (even half) visits bins 0, 1, 2, 3 with values 1, 2, 3, 5 (bin 3 twice: 4, 6)
    # walk 1 (odd half) visits bins 0, 1, 2, 3 with values 2, 1, 4, 7
    pos = np.array([[c[0], c[1], c[2], c[3], c[3]],
                    [c[0], c[1], c[2], c[3], c[3]]], float)
    act = np.array([[1, 2, 3, 4, 6], [2, 1, 4, 7, 7]], float)[..., None]
    r = split_half_reliability(pos, act, 2.0, nbins=2)
    expect = np.corrcoef([1, 2, 3, 5], [2, 1, 4, 7])[0, 1]
    assert r.shape == (1,)
    assert r[0] == pytest.approx(expect, abs=1e-12)


def test_split_half_reliability_uses_only_bins_both_halves_visited():
    from sicref.gridness import split_half_reliability
    c = {0: (-0.5, -0.5), 1: (0.5, -0.5), 2: (-0.5, 0.5), 3: (0.5, 0.5)}
    # the odd half never visits bin 3: the even half's value there must not count
    pos = np.array([[c[0], c[1], c[2], c[3]], [c[0], c[1], c[2], c[2]]], float)
    act = np.array([[1, 2, 3, 100], [1, 3, 2, 2]], float)[..., None]
    r = split_half_reliability(pos, act, 2.0, nbins=2)
    assert r[0] == pytest.approx(np.corrcoef([1, 2, 3], [1, 3, 2])[0, 1], abs=1e-12)


def _walk_data(rng, n_walks=200, n_steps=100, arena=2.0):
    from sicref.evaluate import WalkConfig, random_walks
    _, pos = random_walks(rng, arena, WalkConfig(n_walks=n_walks, n_steps=n_steps))
    return pos


def test_split_half_reliability_separates_a_spatial_pattern_from_walk_noise():
    from sicref.gridness import split_half_reliability
    rng = np.random.default_rng(3)
    pos = _walk_data(rng)
    W, S, _ = pos.shape
    k = 2 * np.pi / 0.6
    angles = np.deg2rad([0, 60, 120])
    lattice = sum(np.cos(k * (pos[..., 0] * np.cos(a) + pos[..., 1] * np.sin(a)))
                  for a in angles)
    grid = np.maximum(lattice, 0) + 0.3 * rng.standard_normal((W, S))  # a noisy lattice
    noise = rng.random((W, S))  # no spatial pattern at all
    # each walk its own pattern: a lattice shifted by a random offset per walk, so
    # either half's map is a blur of many lattices unrelated to the other half's
    shift = rng.uniform(0, 0.6, size=(W, 1, 2))
    p = pos + shift
    walk_own = np.maximum(sum(np.cos(k * (p[..., 0] * np.cos(a) + p[..., 1] * np.sin(a)))
                              for a in angles), 0)
    silent = np.zeros((W, S))
    act = np.stack([grid, noise, walk_own, silent], axis=-1)
    r = split_half_reliability(pos, act, 2.0, nbins=32)
    assert r[0] > 0.8
    assert abs(r[1]) < 0.15
    assert r[2] < r[0] - 0.4
    assert np.isnan(r[3])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10 ** 6), scale=st.floats(0.1, 10.0), offset=st.floats(-5, 5))
def test_split_half_reliability_is_symmetric_and_affine_invariant(seed, scale, offset):
    from sicref.gridness import split_half_reliability
    rng = np.random.default_rng(seed)
    pos = _walk_data(rng, n_walks=12, n_steps=40)
    act = np.stack([np.sin(3 * pos[..., 0]) + 0.5 * rng.standard_normal(pos.shape[:2]),
                    rng.standard_normal(pos.shape[:2])], axis=-1)
    r = split_half_reliability(pos, act, 2.0, nbins=8)
    # swapping the halves (walk 2i <-> 2i+1) swaps the two maps: the same correlation
    order = np.arange(12).reshape(-1, 2)[:, ::-1].ravel()
    swapped = split_half_reliability(pos[order], act[order], 2.0, nbins=8)
    np.testing.assert_allclose(swapped, r, atol=1e-12)
    # a positive affine change of a unit's activity leaves its reliability unchanged
    moved = split_half_reliability(pos, scale * act + offset, 2.0, nbins=8)
    np.testing.assert_allclose(moved, r, atol=1e-9)
    assert np.all((r >= -1) & (r <= 1))


def test_split_half_reliability_refuses_bad_shapes():
    from sicref.gridness import split_half_reliability
    with pytest.raises(ValueError, match="at least 2 walks"):
        split_half_reliability(np.zeros((1, 5, 2)), np.zeros((1, 5, 3)), 2.0)
    with pytest.raises(ValueError, match="positions must be"):
        split_half_reliability(np.zeros((4, 2)), np.zeros((4, 1, 3)), 2.0)
    with pytest.raises(ValueError, match="activations must be"):
        split_half_reliability(np.zeros((4, 5, 2)), np.zeros((4, 6, 3)), 2.0)
