"""Time sicref.gridness.grid_scores on a population of smooth random ratemaps (SPEC §7.4).

    python3 benchmarks/bench_gridness.py [--units 128] [--nbins 32] [--repeats 7]

One warm-up call, then the median wall time of --repeats calls. Also times the ratemap
step on a paper-sized evaluation (200 walks x 400 steps of 128 units, SPEC §7.1).
"""

import argparse
import os
import statistics
import time

import numpy as np
from scipy import ndimage

from sicref.gridness import grid_scores, ratemaps


def median_seconds(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--nbins", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((args.units, args.nbins, args.nbins))
    maps = ndimage.gaussian_filter(noise, sigma=(0, 2, 2))
    positions = rng.uniform(-1.0, 1.0, size=(200 * 400, 2))
    activations = rng.random((len(positions), args.units))

    scores_s = median_seconds(lambda: grid_scores(maps), args.repeats)
    ratemaps_s = median_seconds(
        lambda: ratemaps(positions, activations, 2.0, args.nbins), args.repeats
    )
    print(f"cpus available: {len(os.sched_getaffinity(0))}")
    print(f"grid_scores, {args.units} maps of {args.nbins}x{args.nbins}: "
          f"{scores_s:.3f} s (median of {args.repeats}, {1e3 * scores_s / args.units:.2f} ms/map)")
    print(f"ratemaps, {len(positions)} samples x {args.units} units: "
          f"{ratemaps_s:.3f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
