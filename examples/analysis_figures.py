"""Figures for docs/analysis.md: the gridness pipeline (SPEC §7) on synthetic units.

    python3 examples/analysis_figures.py [--out docs/figures]

Writes analysis_pipeline.png, analysis_examples.png, analysis_modules.png and
analysis_noise.png. Everything is synthetic and seeded, so the figures are reproducible.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from sicref.gridness import (  # noqa: E402
    GRID_THRESHOLD,
    ROTATION_ANGLES,
    autocorrelogram,
    find_modules,
    grid_score,
    grid_scores,
    ratemaps,
    ring_masks,
    rotational_correlations,
    sac_peaks,
    shuffle_threshold,
    spectral_period,
)

ARENA = 2.0
NBINS = 32


def grid_cell(positions, spacing, orientation, phase=(0.0, 0.0)):
    """Rectified sum of three plane waves: fields on a hexagonal lattice (metres, degrees)."""
    k = 4 * np.pi / (np.sqrt(3) * spacing)
    angles = np.radians(orientation + 30 + 60 * np.arange(3))
    waves = np.stack([np.cos(angles), np.sin(angles)], axis=1) * k
    return np.maximum(np.cos((positions - phase) @ waves.T).sum(axis=1), 0.0)


def sampled_positions(rng, count=60_000):
    """Uniform samples of the arena, with a corner never visited to show NaN bins."""
    positions = rng.uniform(-ARENA / 2, ARENA / 2, size=(count, 2))
    return positions[~((positions[:, 0] > 0.55) & (positions[:, 1] > 0.55))]


def show_map(ax, m, title, cmap="viridis"):
    ax.imshow(np.ma.masked_invalid(m), origin="lower", cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def pipeline_figure(rng, path):
    """Ratemap, SAC with the best ring and six peaks, rotated correlations, power spectrum."""
    positions = sampled_positions(rng)
    rate = grid_cell(positions, spacing=0.5, orientation=12.0, phase=(0.1, -0.2))
    rate += 0.3 * rng.standard_normal(len(rate))
    m = ratemaps(positions, rate[:, None], ARENA, NBINS)[0]
    sac = autocorrelogram(m)
    score = grid_score(m)
    best = ring_masks(NBINS, *score.ring[:1], outers=score.ring[1:])
    correlations = rotational_correlations(sac, best)[0]

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.9))
    show_map(axes[0], m, "ratemap (unvisited corner: NaN)")
    show_map(axes[1], sac, "autocorrelogram, best ring, six peaks", cmap="RdBu_r")
    centre = NBINS - 1
    for radius in score.ring:
        axes[1].add_patch(plt.Circle((centre, centre), radius * NBINS, fill=False, color="k"))
    peaks = sac_peaks(sac)
    axes[1].plot(centre + peaks[:, 0], centre + peaks[:, 1], "x", color="k", markersize=7)

    colours = ["tab:red" if a in (30, 90, 150) else "tab:green" if a in (60, 120) else "0.6"
               for a in ROTATION_ANGLES]
    axes[2].bar([str(a) for a in ROTATION_ANGLES], correlations, color=colours)
    axes[2].axhline(0, color="k", lw=0.8)
    axes[2].set_xlabel("rotation (degrees)")
    axes[2].set_ylabel("Pearson r inside the ring")
    axes[2].set_title(f"score60 {score.score60:.2f}, score90 {score.score90:.2f}", fontsize=9)

    centred = np.where(np.isfinite(m), m - np.nanmean(m), 0.0)
    size = 8 * NBINS
    power = np.fft.fftshift(np.abs(np.fft.fft2(centred, s=(size, size))) ** 2)
    frequency = np.fft.fftshift(np.fft.fftfreq(size))
    axes[3].imshow(power, origin="lower", cmap="magma", extent=[frequency[0], frequency[-1]] * 2)
    wave = 2 / (np.sqrt(3) * spectral_period(m))
    axes[3].add_patch(plt.Circle((0, 0), wave, fill=False, color="w", ls="--"))
    axes[3].set_xlim(-0.3, 0.3)
    axes[3].set_ylim(-0.3, 0.3)
    axes[3].set_xlabel("cycles per bin")
    axes[3].set_title(f"power spectrum: spacing {spectral_period(m):.1f} bins", fontsize=9)
    fig.suptitle(f"Synthetic grid cell, spacing 0.5 m = 8 bins, orientation 12 deg: measured "
                 f"period {score.period:.2f} bins, orientation {score.orientation:.1f} deg",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def example_maps(rng):
    y, x = np.mgrid[0:NBINS, 0:NBINS].astype(float)
    positions = np.stack([x, y], axis=-1).reshape(-1, 2)
    return {
        "hexagonal": grid_cell(positions, 9.0, 20.0).reshape(NBINS, NBINS),
        "square": np.cos(2 * np.pi * x / 9) + np.cos(2 * np.pi * y / 9),
        "bands": np.cos(2 * np.pi * (x * np.cos(0.4) + y * np.sin(0.4)) / 8),
        "smooth noise": ndimage.gaussian_filter(rng.standard_normal((NBINS, NBINS)), 2),
        "place field": np.exp(-((x - 11) ** 2 + (y - 19) ** 2) / (2 * 3.0**2)),
    }


def examples_figure(rng, path):
    """Ratemap and SAC of five kinds of tuning, with their scores."""
    maps = example_maps(rng)
    fig, axes = plt.subplots(2, len(maps), figsize=(2.6 * len(maps), 6.0))
    for column, (name, m) in enumerate(maps.items()):
        score = grid_score(m)
        show_map(axes[0, column], m, name)
        show_map(axes[1, column], autocorrelogram(m), f"SAC: score60 {score.score60:.2f}, "
                 f"score90 {score.score90:.2f}", cmap="RdBu_r")
    fig.tight_layout(h_pad=1.5)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def modules_figure(rng, path):
    """Log-period histogram of a three-module population and the modules found."""
    truth = np.repeat(np.arange(3), [40, 30, 25])
    periods = 0.3 * 1.4**truth * np.exp(0.05 * rng.standard_normal(truth.size))
    labels, module_periods = find_modules(periods)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bins = np.geomspace(periods.min() * 0.95, periods.max() * 1.05, 40)
    for k in range(len(module_periods)):
        ax.hist(periods[labels == k], bins=bins, alpha=0.8, label=f"module {k}")
        ax.axvline(module_periods[k], color="k", ls="--", lw=0.8)
    ratios = ", ".join(f"{b / a:.2f}" for a, b in zip(module_periods[:-1], module_periods[1:]))
    ax.set_xscale("log")
    ticks = [0.25, 0.3, 0.4, 0.5, 0.6, 0.7]
    ax.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("period (m)")
    ax.set_ylabel("units")
    ax.set_title(f"find_modules: periods {np.round(module_periods, 3).tolist()} m, "
                 f"ratios {ratios} (truth 0.3, 0.42, 0.588; 5 % noise)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def noise_figure(rng, path):
    """score60 of smooth noise maps against the 0.3 threshold and a shuffle threshold."""
    noise = ndimage.gaussian_filter(rng.standard_normal((500, NBINS, NBINS)), (0, 2, 2))
    scores = grid_scores(noise).score60
    hexagon = example_maps(rng)["hexagonal"]
    shuffled = shuffle_threshold(hexagon, rng)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(scores, bins=40, color="0.6")
    ax.axvline(GRID_THRESHOLD, color="tab:red", label=f"threshold {GRID_THRESHOLD}")
    ax.axvline(np.percentile(scores, 95), color="k", ls="--",
               label=f"95th percentile of noise {np.percentile(scores, 95):.2f}")
    ax.axvline(shuffled, color="tab:blue", ls=":",
               label=f"field-shuffle threshold of the hexagonal map {shuffled:.2f}")
    ax.set_xlabel("score60 (min-max, best ring)")
    ax.set_ylabel("maps")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.45)
    ax.set_title(f"500 smooth noise maps (sigma 2 bins): {np.mean(scores > GRID_THRESHOLD):.0%} "
                 f"exceed {GRID_THRESHOLD}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipeline_figure(np.random.default_rng(0), args.out / "analysis_pipeline.png")
    examples_figure(np.random.default_rng(1), args.out / "analysis_examples.png")
    modules_figure(np.random.default_rng(2), args.out / "analysis_modules.png")
    noise_figure(np.random.default_rng(3), args.out / "analysis_noise.png")


if __name__ == "__main__":
    main()
