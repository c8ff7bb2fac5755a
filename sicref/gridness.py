"""Gridness analysis: ratemaps, spatial autocorrelograms, grid scores (SPEC §7.2-§7.6).

Conventions used throughout:
- A ratemap is indexed ``[..., row, column] = [..., y bin, x bin]``, both increasing with
  the coordinate, so ``imshow(ratemap, origin="lower")`` shows the arena as seen from above.
- A spatial autocorrelogram (SAC) of an n x n map is (2n-1) x (2n-1); entry
  ``[n-1+dy, n-1+dx]`` is the correlation at the lag (dx, dy) bins.
- Periods are in bins (multiply by arena_size / nbins for metres); angles are in degrees,
  counter-clockwise from the +x axis.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, signal

# Period, orientation (SPEC §7.5) and modules (SPEC §7.6) live in their own files and are
# part of this module's API.
from sicref.lattice import lattice_period_orientation, sac_peaks, spectral_period  # noqa: F401
from sicref.modules import find_modules  # noqa: F401

ROTATION_ANGLES = (30, 45, 60, 90, 120, 135, 150)
RING_INNER_RADIUS = 0.2
RING_OUTER_RADII = tuple(float(r) for r in np.linspace(0.4, 1.0, 10))
MIN_OVERLAP = 20
GRID_THRESHOLD = 0.3


@dataclass(frozen=True)
class GridScore:
    """Gridness of one ratemap (SPEC §7.4-§7.5); every field is NaN when undefined.

    score60, score60_mean and score90 all come from the ring that maximises score60.
    ring is (inner, outer) as fractions of the SAC half-width; period is in bins;
    orientation is in degrees in [0, 60).
    """

    score60: float
    score60_mean: float
    score90: float
    ring: tuple
    period: float
    orientation: float


@dataclass(frozen=True)
class GridScores:
    """Gridness of U ratemaps: the fields of GridScore as arrays, (U,) each, ring (U, 2)."""

    score60: np.ndarray
    score60_mean: np.ndarray
    score90: np.ndarray
    ring: np.ndarray
    period: np.ndarray
    orientation: np.ndarray


def ratemaps(positions, activations, arena_size, nbins=32):
    """SPEC §7.2: mean activity of each unit per spatial bin; NaN where never visited.

    positions (M, 2) are (x, y) in metres in a square arena of side arena_size centred on
    the origin; activations (M, U). Returns (U, nbins, nbins). Positions on or outside a
    wall fall into the edge bin: walls reflect, so they are at most a rounding error out.
    """
    positions = np.asarray(positions, dtype=float)
    activations = np.asarray(activations, dtype=float)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise ValueError(f"positions must be (M, 2), got {positions.shape}")
    if activations.ndim != 2 or activations.shape[0] != positions.shape[0]:
        raise ValueError(f"activations must be (M, U), M = {len(positions)}: {activations.shape}")
    index = np.floor((positions / arena_size + 0.5) * nbins).astype(int)
    ix, iy = np.clip(index, 0, nbins - 1).T
    flat_bin = iy * nbins + ix
    visits = np.bincount(flat_bin, minlength=nbins * nbins)[:, None]
    totals = np.zeros((nbins * nbins, activations.shape[1]))
    np.add.at(totals, flat_bin, activations)
    means = np.full(totals.shape, np.nan)
    np.divide(totals, visits, out=means, where=visits > 0)
    return means.T.reshape(-1, nbins, nbins)


def spatial_coherence(ratemaps):
    """Spatial coherence of each ratemap (Muller & Kubie 1989): the Pearson correlation,
    over visited bins, between a bin's value and the mean of its visited neighbours
    (up to 8). Fields that span several bins give values near 1; scattered single-bin
    activity gives values near 0. ratemaps (U, n, n) or (n, n) with NaN where unvisited;
    returns (U,) or a float; NaN where the map or its neighbour means are constant.
    """
    maps = np.asarray(ratemaps, dtype=float)
    one = maps.ndim == 2
    maps = maps[None] if one else maps
    visited = np.isfinite(maps)
    kernel = np.ones((1, 3, 3))
    kernel[0, 1, 1] = 0
    sums = ndimage.convolve(np.where(visited, maps, 0.0), kernel, mode="constant")
    counts = ndimage.convolve(visited.astype(float), kernel, mode="constant")
    use = visited & (counts > 0)
    out = np.full(len(maps), np.nan)
    for u in range(len(maps)):
        x = maps[u][use[u]]
        y = sums[u][use[u]] / counts[u][use[u]]
        if x.size > 1 and np.ptp(x) > 0 and np.ptp(y) > 0:
            out[u] = np.corrcoef(x, y)[0, 1]
    return float(out[0]) if one else out


RELIABILITY_THRESHOLD = 0.5


def split_half_reliability(positions, activations, arena_size, nbins=32):
    """Split-half reliability of each unit's ratemap: the Pearson correlation, over the
    bins visited in both halves, between the ratemap of the even-numbered walks and
    that of the odd-numbered ones. A field pattern that the network carries through
    space is drawn again by the other half of the walks (values near 1); activity that
    depends on where each walk happened to be, or on a few visits, is not (near 0).

    positions (W, S, 2) and activations (W, S, U) are W walks of S steps, W >= 2.
    Returns (U,); NaN where either half's map is constant over the shared bins or
    fewer than 3 bins are shared (a silent unit, say)."""
    positions = np.asarray(positions, dtype=float)
    activations = np.asarray(activations, dtype=float)
    if positions.ndim != 3 or positions.shape[-1] != 2:
        raise ValueError(f"positions must be (walks, steps, 2), got {positions.shape}")
    if activations.ndim != 3 or activations.shape[:2] != positions.shape[:2]:
        raise ValueError(f"activations must be (walks, steps, units) matching positions "
                         f"{positions.shape[:2]}, got {activations.shape}")
    if positions.shape[0] < 2:
        raise ValueError(f"split-half reliability needs at least 2 walks, got "
                         f"{positions.shape[0]}")
    halves = [ratemaps(positions[h::2].reshape(-1, 2),
                       activations[h::2].reshape(-1, activations.shape[-1]),
                       arena_size, nbins) for h in (0, 1)]
    a, b = halves
    shared = np.isfinite(a[0]) & np.isfinite(b[0])  # visits are the same for every unit
    out = np.full(a.shape[0], np.nan)
    if shared.sum() < 3:
        return out
    for u in range(len(out)):  # as in spatial_coherence: Pearson r, NaN for a flat map
        x, y = a[u][shared], b[u][shared]
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            out[u] = np.corrcoef(x, y)[0, 1]
    return out


def _lagged_sums(a, b):
    """sum_p a[p] * b[p + lag] at every integer lag, over the last two axes."""
    return signal.fftconvolve(b, a[..., ::-1, ::-1], mode="full", axes=(-2, -1))


def _pearson_from_sums(n, sx, sy, sxx, syy, sxy, variance_floor):
    """Pearson r of paired samples from their sums; NaN where a variance is below the floor."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = sx / n, sy / n
        vx, vy = sxx / n - mx**2, syy / n - my**2
        r = (sxy / n - mx * my) / np.sqrt(vx * vy)
    defined = (vx > variance_floor) & (vy > variance_floor)
    return np.where(defined, np.clip(r, -1.0, 1.0), np.nan)


def autocorrelogram(ratemap, min_overlap=MIN_OVERLAP):
    """SPEC §7.3: spatial autocorrelogram, the Pearson r of the map with itself at every lag.

    At lag tau the correlation runs over the bins p where ratemap[p] and ratemap[p + tau]
    are both finite (Sargolini et al. 2006; Banino et al. 2018), from six FFT
    cross-correlations of the masked map, its square and the visit mask. Lags with fewer
    than min_overlap such pairs (Sargolini et al. leave out lags under 20 bins), or with
    no variance on either side, are NaN. Accepts (..., n, n); returns (..., 2n-1, 2n-1).
    """
    m = np.asarray(ratemap, dtype=float)
    visited = np.isfinite(m)
    count = visited.sum(axis=(-2, -1), keepdims=True)
    total = np.where(visited, m, 0.0).sum(axis=(-2, -1), keepdims=True)
    # Centring changes no correlation but keeps the FFT sums of squares well conditioned.
    x = np.where(visited, m - total / np.maximum(count, 1), 0.0)
    w = visited.astype(float)
    n = np.rint(_lagged_sums(w, w))
    mean_square = (x**2).sum(axis=(-2, -1), keepdims=True) / np.maximum(count, 1)
    sums = [_lagged_sums(a, b) for a, b in ((x, w), (w, x), (x * x, w), (w, x * x), (x, x))]
    # Below this floor a lag's variance is FFT round-off of a constant map, not signal.
    r = _pearson_from_sums(n, *sums, variance_floor=1e-10 * mean_square)
    return np.where(n >= min_overlap, r, np.nan)


def ring_masks(nbins, inner=RING_INNER_RADIUS, outers=RING_OUTER_RADII):
    """SPEC §7.4: annuli inner < radius <= outer around the SAC centre, one per outer radius.

    Radii are fractions of the SAC half-width, taken as nbins as in Banino et al. 2018.
    Returns a boolean (len(outers), 2*nbins-1, 2*nbins-1) array.
    """
    lag = np.arange(-(nbins - 1), nbins)
    radius = np.hypot(lag[:, None], lag[None, :]) / nbins
    return np.stack([(radius > inner) & (radius <= outer) for outer in outers])


def rotated_autocorrelograms(sac):
    """SPEC §7.4: the SAC rotated about its centre by each of ROTATION_ANGLES (bilinear).

    Returns (len(ROTATION_ANGLES), ...) + sac.shape. A rotated bin is NaN unless every
    bin it interpolates from (weight above round-off) is finite: the mask of finite bins
    is rotated alongside the values.
    """
    defined = np.isfinite(sac)
    filled = np.where(defined, sac, 0.0)
    rotated = []
    for angle in ROTATION_ANGLES:
        values, coverage = (
            ndimage.rotate(a, angle, axes=(-1, -2), reshape=False, order=1)
            for a in (filled, defined.astype(float))
        )
        rotated.append(np.where(coverage > 1 - 1e-9, values, np.nan))
    return np.stack(rotated)


def rotational_correlations(sac, rings):
    """SPEC §7.4: Pearson r of the SAC with each rotated SAC inside each ring.

    sac (..., S, S), rings (R, S, S) boolean. Only bins finite in both maps count.
    Returns (..., R, len(ROTATION_ANGLES)).
    """
    sac = np.asarray(sac, dtype=float)
    ring_columns = rings.reshape(len(rings), -1).T.astype(float)
    x = sac.reshape(*sac.shape[:-2], -1)
    correlations = []
    for rotated in rotated_autocorrelograms(sac):
        y = rotated.reshape(x.shape)
        both = np.isfinite(x) & np.isfinite(y)
        xb, yb = np.where(both, x, 0.0), np.where(both, y, 0.0)
        paired = (both.astype(float), xb, yb, xb * xb, yb * yb, xb * yb)
        sums = [a @ ring_columns for a in paired]
        correlations.append(_pearson_from_sums(*sums, variance_floor=1e-12))
    return np.stack(correlations, axis=-1)


def gridness_from_correlations(c):
    """SPEC §7.4: (score60 min-max, score60 mean form, score90) from correlations (..., 7)."""
    c30, c45, c60, c90, c120, c135, c150 = np.moveaxis(np.asarray(c), -1, 0)
    score60 = np.minimum(c60, c120) - np.maximum(np.maximum(c30, c90), c150)
    score60_mean = (c60 + c120) / 2 - (c30 + c90 + c150) / 3
    score90 = c90 - (c45 + c135) / 2
    return score60, score60_mean, score90


def grid_scores(ratemaps, inner=RING_INNER_RADIUS, outers=RING_OUTER_RADII,
                min_overlap=MIN_OVERLAP):
    """SPEC §7.4-§7.5: grid scores, best ring, period and orientation of U ratemaps (U, n, n).

    Every ring gives score60 (min-max form); the ring with the highest score60 is reported
    and score60_mean and score90 are read on that same ring, so the three scores describe
    one annulus of the SAC (Banino et al. 2018 pick score90's ring separately).
    """
    maps = np.asarray(ratemaps, dtype=float)
    if maps.ndim != 3 or maps.shape[1] != maps.shape[2]:
        raise ValueError(f"ratemaps must be (U, n, n), got {maps.shape}")
    sacs = autocorrelogram(maps, min_overlap)
    rings = ring_masks(maps.shape[1], inner, outers)
    per_ring = gridness_from_correlations(rotational_correlations(sacs, rings))
    best = np.argmax(np.nan_to_num(per_ring[0], nan=-np.inf), axis=1)[:, None]
    score60, score60_mean, score90 = (np.take_along_axis(s, best, axis=1)[:, 0] for s in per_ring)
    ring = np.column_stack([np.full(len(maps), inner), np.asarray(outers)[best[:, 0]]])
    # Peak sets differ in size from unit to unit, so this step goes unit by unit.
    lattice = np.array([lattice_period_orientation(sac) for sac in sacs]).reshape(-1, 2)
    return GridScores(
        score60=score60,
        score60_mean=score60_mean,
        score90=score90,
        ring=np.where(np.isfinite(score60)[:, None], ring, np.nan),
        period=lattice[:, 0],
        orientation=lattice[:, 1],
    )


def grid_score(ratemap, inner=RING_INNER_RADIUS, outers=RING_OUTER_RADII,
               min_overlap=MIN_OVERLAP):
    """SPEC §7.4-§7.5: GridScore of one (n, n) ratemap; see grid_scores."""
    scores = grid_scores(np.asarray(ratemap, dtype=float)[None], inner, outers, min_overlap)
    return GridScore(
        score60=float(scores.score60[0]),
        score60_mean=float(scores.score60_mean[0]),
        score90=float(scores.score90[0]),
        ring=tuple(float(r) for r in scores.ring[0]),
        period=float(scores.period[0]),
        orientation=float(scores.orientation[0]),
    )


def field_shuffles(ratemap, rng, n_shuffles=100, field_level=0.5):
    """SPEC §7.4 shuffle test: copies of the map with every firing field moved at random.

    Fields are the connected regions above min + field_level * (max - min), field_level
    in [0, 1). Each copy
    starts from the median of the bins outside fields and pastes every field, its shape
    and values intact, at a uniformly random place inside the arena (the larger value
    wins where two overlap); unvisited bins stay NaN. Field number, size and shape
    survive; their arrangement, which is what a grid score measures, does not.
    Returns (n_shuffles, n, n); empty for a map without fields.
    """
    m = np.asarray(ratemap, dtype=float)
    visited = np.isfinite(m)
    if not visited.any() or np.ptp(m[visited]) == 0:
        return np.empty((0,) + m.shape)
    level = m[visited].min() + field_level * np.ptp(m[visited])
    in_field = visited & (m > level)
    labels, _ = ndimage.label(in_field)
    boxes = ndimage.find_objects(labels)
    fields = [np.where(labels[box] == k + 1, m[box], -np.inf) for k, box in enumerate(boxes)]
    background = np.median(m[visited & ~in_field])
    n_rows, n_cols = m.shape
    shuffles = np.full((n_shuffles,) + m.shape, background)
    for shuffle in shuffles:
        for field in fields:
            h, w = field.shape
            r, c = rng.integers(0, n_rows - h + 1), rng.integers(0, n_cols - w + 1)
            np.maximum(shuffle[r:r + h, c:c + w], field, out=shuffle[r:r + h, c:c + w])
    return np.where(visited, shuffles, np.nan)


def shuffle_threshold(ratemap, rng, n_shuffles=100, percentile=95.0, field_level=0.5):
    """SPEC §7.4 shuffle test: a percentile of score60 over field-shuffled copies of the map.

    A unit passes when its own score60 exceeds this value. NaN if no shuffle has a score.
    """
    shuffles = field_shuffles(ratemap, rng, n_shuffles, field_level)
    scores = grid_scores(shuffles).score60 if len(shuffles) else np.empty(0)
    finite = scores[np.isfinite(scores)]
    return float(np.percentile(finite, percentile)) if finite.size else np.nan


def is_grid(score60, threshold=GRID_THRESHOLD, shuffle_thresholds=None):
    """SPEC §7.4: grid units score60 > threshold and, where given, > their shuffle threshold.

    SPEC §10: smooth noise maps of 32 bins reach score60 of 0.3 and more (docs/analysis.md
    measures a 95th percentile near 0.55), so a threshold of 0.3 wants the shuffle test or
    a margin. NaN scores are never grid.
    """
    score60 = np.asarray(score60, dtype=float)
    grid = score60 > threshold
    if shuffle_thresholds is not None:
        grid &= score60 > np.asarray(shuffle_thresholds, dtype=float)
    return grid
