"""Grid modules: grouping grid units by period (SPEC §7.6)."""

import numpy as np


def _log_period_density(x, grid, bandwidth):
    """Gaussian kernel density of the log-periods x on a grid (unnormalised)."""
    return np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bandwidth) ** 2).sum(axis=1)


def _density_minima(density):
    """Grid indices of the interior local minima (first index of a flat valley)."""
    inner = np.arange(1, len(density) - 1)
    return inner[(density[inner] < density[inner - 1]) & (density[inner] <= density[inner + 1])]


def _segment_labels(x, boundaries):
    """Index of the segment between sorted boundaries that each x falls in."""
    return np.searchsorted(boundaries, x, side="right")


def _weakest_invalid_boundary(x, grid, density, cuts, min_ratio, max_valley, min_size):
    """Index into cuts of the boundary to drop next, or None when every boundary stands.

    A boundary stands when the density peaks on its two sides are at least min_ratio apart
    in period, its valley is at most max_valley times the lower peak, and each side holds
    at least min_size units. Of those that fail, the shallowest valley goes first.
    """
    edges = np.concatenate([[0], cuts, [len(grid)]])
    peaks = [lo + np.argmax(density[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]
    sizes = np.bincount(_segment_labels(x, grid[cuts]), minlength=len(cuts) + 1)
    worst, worst_valley = None, -np.inf
    for k, cut in enumerate(cuts):
        left, right = peaks[k], peaks[k + 1]
        valley = density[cut] / min(density[left], density[right])
        fails = (
            grid[right] - grid[left] < np.log(min_ratio)
            or valley > max_valley
            or min(sizes[k], sizes[k + 1]) < min_size
        )
        if fails and valley > worst_valley:
            worst, worst_valley = k, valley
    return worst


def find_modules(periods, min_ratio=1.2, min_size=3, bandwidth=None, max_valley=0.8):
    """SPEC §7.6: cluster units into grid modules by a kernel density of their log-period.

    Algorithm:
    1. x = log(period) of every unit with a finite, positive period; the others get -1.
    2. A Gaussian kernel density of x, bandwidth log(min_ratio) / 2.5 by default (about
       7 % in period), on a grid of step bandwidth / 20; module boundaries start at its
       local minima.
    3. Boundaries are dropped one at a time, shallowest valley first, until every one
       left separates density peaks at least min_ratio apart in period, has a valley at
       most max_valley times the lower of the two peaks, and has at least min_size units
       on each side.
    4. Each segment between boundaries is a module; its period is the exp of the median
       log-period of its units. Modules are numbered by ascending period.
    Periods compare by ratio, so any unit (bins, metres) works. With the defaults one
    module with 10-20 % multiplicative noise stays whole; modules 1.4 apart separate at
    up to 7 % noise when of equal size, up to 5 % when one is three times the other; a
    module ten times smaller than its neighbour is often absorbed by it.

    Returns (labels (U,) int with -1 for no module, module periods (K,) ascending).
    """
    if min_ratio <= 1:
        raise ValueError(f"min_ratio must exceed 1, got {min_ratio}")
    periods = np.asarray(periods, dtype=float)
    labels = np.full(periods.shape, -1)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(periods) & (periods > 0)
    if not usable.any():
        return labels, np.empty(0)
    x = np.sort(np.log(periods[usable]))
    h = np.log(min_ratio) / 2.5 if bandwidth is None else bandwidth
    grid = np.arange(x[0] - 3 * h, x[-1] + 3 * h, h / 20)
    density = _log_period_density(x, grid, h)
    cuts = _density_minima(density)
    while True:
        k = _weakest_invalid_boundary(x, grid, density, cuts, min_ratio, max_valley, min_size)
        if k is None:
            break
        cuts = np.delete(cuts, k)
    labels[usable] = _segment_labels(np.log(periods[usable]), grid[cuts])
    module_periods = np.array(
        [np.exp(np.median(np.log(periods[labels == k]))) for k in range(len(cuts) + 1)]
    )
    return labels, module_periods


def module_min_size(n_grid, fraction=0.1, floor=3):
    """Units a module needs to be reported: `fraction` of the grid units, at least `floor`."""
    if not 0 <= fraction < 1:
        raise ValueError(f"min module fraction must be in [0, 1), got {fraction}")
    return max(int(floor), int(np.ceil(fraction * n_grid)))


def drop_small_modules(labels, module_periods, min_size):
    """Unassign (label -1) the units of modules with fewer than min_size units.

    find_modules only splits where both sides hold min_size units, which it keeps small
    so that a real small module is not absorbed; a few sparse, noisy units that pass the
    grid threshold with a stray period then form a "module" of their own. This leaves
    such groups out of the module count without moving their units into a neighbouring
    module. Returns (labels renumbered 0..K-1 by ascending period, kept periods (K,),
    left-out groups as (periods, sizes))."""
    labels = np.asarray(labels)
    module_periods = np.asarray(module_periods, dtype=float)
    sizes = np.array([np.sum(labels == k) for k in range(len(module_periods))], dtype=int)
    keep = sizes >= min_size
    new_index = np.append(np.where(keep, np.cumsum(keep) - 1, -1), -1)
    new_labels = new_index[np.where(labels >= 0, labels, -1)]
    return new_labels, module_periods[keep], (module_periods[~keep], sizes[~keep])
