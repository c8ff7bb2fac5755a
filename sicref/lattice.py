"""Lattice period and orientation of a grid map (SPEC §7.5).

Same conventions as sicref.gridness: SAC entry [n-1+dy, n-1+dx] is lag (dx, dy) in bins;
angles in degrees counter-clockwise from +x.
"""

import numpy as np
from scipy import ndimage


def _parabolic_offset(before, centre, after):
    """Sub-bin position of a peak from the parabola through three samples; 0 if undefined."""
    curvature = before - 2 * centre + after
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = 0.5 * (before - after) / curvature
    defined = np.isfinite(before) & np.isfinite(after) & (curvature < 0)
    return np.where(defined, np.clip(offset, -0.5, 0.5), 0.0)


def sac_peaks(sac, count=6):
    """SPEC §7.5: (dx, dy) lags of the `count` positive SAC local maxima nearest the centre.

    Local maxima over the 3 x 3 neighbourhood, the central peak excluded, refined to sub-bin
    positions by a parabola along each axis. Returns (k, 2) with k <= count, nearest first.
    """
    padded = np.pad(np.where(np.isfinite(sac), sac, -np.inf), 1, constant_values=-np.inf)
    core = padded[1:-1, 1:-1]
    is_peak = (core == ndimage.maximum_filter(padded, size=3)[1:-1, 1:-1]) & (core > 0)
    centre = sac.shape[-1] // 2
    is_peak[centre, centre] = False
    rows, cols = np.nonzero(is_peak)
    r, c = rows + 1, cols + 1
    dy = rows - centre + _parabolic_offset(padded[r - 1, c], padded[r, c], padded[r + 1, c])
    dx = cols - centre + _parabolic_offset(padded[r, c - 1], padded[r, c], padded[r, c + 1])
    nearest = np.argsort(np.hypot(dx, dy), kind="stable")[:count]
    return np.column_stack([dx, dy])[nearest]


def lattice_period_orientation(sac):
    """SPEC §7.5: period (median peak distance, bins) and orientation (degrees in [0, 60)).

    The orientation is the circular mean of the six peak angles on the 6-fold circle, so
    peaks at 59 and 1 degree average to 0, not 30. Fewer than three peaks: NaN, NaN.
    """
    peaks = sac_peaks(sac)
    if len(peaks) < 3:
        return np.nan, np.nan
    dx, dy = peaks.T
    period = float(np.median(np.hypot(dx, dy)))
    angle = np.angle(np.sum(np.exp(6j * np.arctan2(dy, dx))))
    orientation = float(np.degrees(angle) / 6 % 60)
    # x % 60 of a tiny negative x rounds up to 60.0, which must wrap to 0.
    return period, (0.0 if orientation >= 60 else orientation)


def spectral_period(ratemap, pad_factor=8):
    """SPEC §7.5 cross-check: hexagonal field spacing (bins) from the 2-D power spectrum peak.

    The map (unvisited bins at its mean) is zero-padded to pad_factor * n for a fine
    frequency grid; wavelengths longer than the map are ignored. A hexagonal lattice of
    spacing d is a sum of plane waves of wavelength d * sqrt(3) / 2, so the strongest
    frequency |f| gives d = 2 / (sqrt(3) |f|). Accepts (..., n, n); NaN for a flat map.
    """
    m = np.asarray(ratemap, dtype=float)
    n = m.shape[-1]
    maps = m.reshape(-1, n, n)
    visited = np.isfinite(maps)
    filled = np.where(visited, maps, 0.0)
    count = visited.sum(axis=(1, 2), keepdims=True)
    mean = filled.sum(axis=(1, 2), keepdims=True) / np.maximum(count, 1)
    centred = np.where(visited, filled - mean, 0.0)
    size = pad_factor * n
    power = np.abs(np.fft.rfft2(centred, s=(size, size))) ** 2
    frequency = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    power = np.where(frequency >= 1 / n, power, 0.0).reshape(len(maps), -1)
    peak_frequency = frequency.ravel()[np.argmax(power, axis=1)]
    highest = np.where(visited, filled, -np.inf).max(axis=(1, 2))
    lowest = np.where(visited, filled, np.inf).min(axis=(1, 2))
    flat = ~(highest > lowest)
    period = 2 / (np.sqrt(3) * np.where(flat, np.nan, peak_frequency))
    return period.reshape(m.shape[:-2]) if m.ndim > 2 else float(period[0])
