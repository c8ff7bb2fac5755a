"""Time and peak memory of one training step's forward+backward pass.

For each size and each method of the pair terms (LossConfig.method "reference" and
"fast"), a fresh Python process builds a batch and runs value_and_grad of
sicref.train.batch_objective: one warm-up call, then --repeats timed calls (more for
quick cases, until a second has been timed). It reports the median and minimum wall
time and its own peak RSS (ru_maxrss). A third process
times the floor: the step's two largest matrix products alone (see floor_products).
Two more time the rollout alone, forward+backward, before and after its hand-derived
backward pass (see child_rollout).

    python3 benchmarks/bench_step.py                      # all sizes, markdown table
    python3 benchmarks/bench_step.py --sizes medium paper --repeats 7 --json out.json

The reference method holds several P x P float64 matrices (P = B*T). Each child runs
under an address-space limit (--mem-limit-gb), so a case that does not fit fails with
MemoryError instead of exhausting the machine; a case whose estimated need exceeds the
limit or the memory available now is skipped and reported as such.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {  # name: (B, T, N, H); tiny and small are the presets of sicref.config
    "tiny": None,
    "small": None,
    "medium": (16, 30, 64, 128),
    "paper": (130, 60, 128, 256),
}
METHODS = ("reference", "fast")
# P x P float64 matrices the reference holds at its peak: about 9-10 measured at
# P = 1950 and 3900 (value_and_grad of batch_objective); 12 leaves a margin.
REFERENCE_PEAK_MATRICES = 12


def size_config(name, method):
    from sicref.config import preset, replace

    if SIZES[name] is None:
        cfg = preset(name)
    else:
        B, T, N, H = SIZES[name]
        cfg = replace(preset("paper"), data={"batch_size": B, "seq_len": T},
                      model={"n_units": N, "hidden": H})
    return replace(cfg, loss={"method": method})


def dims(cfg):
    return (cfg.data.batch_size, cfg.data.seq_len, cfg.model.n_units, cfg.model.hidden)


def make_inputs(cfg, seed=0):
    import numpy as np

    from sicref.data import sample_batch
    from sicref.model import init_params

    rng = np.random.default_rng(seed)
    params = init_params(rng, cfg.model.n_units, cfg.model.hidden, cfg.model.n_layers)
    batch = sample_batch(rng, cfg.data.batch_size, cfg.data.seq_len, cfg.data.vmax)
    return params, batch


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


MIN_TIMED_SECONDS = 1.0  # fast cases repeat until this much time is measured
MAX_REPEATS = 200


def time_calls(fn, repeats):
    """Wall times of fn after one warm-up call: `repeats` calls at least, more (up to
    MAX_REPEATS) while less than MIN_TIMED_SECONDS has been measured."""
    fn()
    times = []
    while len(times) < repeats or (sum(times) < MIN_TIMED_SECONDS
                                   and len(times) < MAX_REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def child_step(size, method, repeats):
    """One case: value_and_grad of batch_objective."""
    from autograd import value_and_grad

    from sicref.train import batch_objective

    cfg = size_config(size, method)
    params, batch = make_inputs(cfg)
    step = value_and_grad(batch_objective)
    rss_setup = peak_rss_mb()
    times = time_calls(lambda: step(params, batch, cfg), repeats)
    return {"times": times, "peak_rss_mb": peak_rss_mb(), "setup_rss_mb": rss_setup}


def plain_permuted_rollout(params, base, perm, norm_eps=1e-8):
    """The rollout before the hand-derived backward pass: autograd through the plain
    loop, gathering each step's B matrices W_base[perm[:, t]]."""
    from sicref.model import initial_state, rollout_transitions, transition_matrices

    B, T = perm.shape
    W_base = transition_matrices(params, base)
    g0 = initial_state(params, norm_eps)
    return g0, rollout_transitions(lambda t: W_base[perm[:, t]], g0, B, T, norm_eps)


def child_rollout(size, impl, repeats):
    """value_and_grad of a fixed linear function of the states, through the rollout
    alone: "plain" (autograd through the loop) or "permuted" (model.rollout_permuted)."""
    import autograd.numpy as anp
    import numpy as np
    from autograd import value_and_grad

    from sicref.model import rollout_permuted

    cfg = size_config(size, "fast")
    params, batch = make_inputs(cfg)
    rollout = rollout_permuted if impl == "permuted" else plain_permuted_rollout
    weights = np.random.default_rng(1).normal(size=batch.perm.shape + (cfg.model.n_units,))
    step = value_and_grad(lambda p: anp.sum(rollout(p, batch.base, batch.perm)[1] * weights))
    times = time_calls(lambda: step(params), repeats)
    return {"times": times, "peak_rss_mb": peak_rss_mb()}


def floor_products(g, block_rows):
    """The two largest matrix products of a step, as sicref.fastloss does them.

    1. the Gram products g_i.g_j over the upper triangle, in row blocks
       (P^2 / 2 x (N + 2) multiply-adds, with the two columns that add the shifts);
    2. the kernel-times-states products K [G, 1] and K^T [G, 1] of the gradient
       (P^2 x (N + 1) multiply-adds).
    The kernel block is taken as it comes out of product 1 (no exp, no masks): only the
    matrix products are timed.
    """
    import numpy as np

    P, N = g.shape
    rows = np.hstack([g, np.ones((P, 2))])
    cols = np.ascontiguousarray(rows.T)
    g1 = np.hstack([g, np.ones((P, 1))])
    kg1 = np.zeros((P, N + 1))
    work = np.empty(block_rows * P)
    for i0 in range(0, P, block_rows):
        i1 = min(i0 + block_rows, P)
        E = work[:(i1 - i0) * (P - i0)].reshape(i1 - i0, P - i0)
        np.matmul(rows[i0:i1], cols[:, i0:], out=E)
        kg1[i0:i1] += E @ g1[i0:]
        kg1[i0:] += E.T @ g1[i0:i1]
    return kg1


def child_floor(size, repeats):
    import numpy as np

    from sicref.fastloss import default_block_rows
    from sicref.model import norm_relu

    cfg = size_config(size, "fast")
    B, T, N, _ = dims(cfg)
    g = norm_relu(np.random.default_rng(0).normal(size=(B * T, N)))
    b = default_block_rows(B * T)
    times = time_calls(lambda: floor_products(g, b), repeats)
    return {"times": times, "peak_rss_mb": peak_rss_mb(), "block_rows": b}


def profile_step(size, method, repeats, top=20):
    """cProfile of value_and_grad(batch_objective), sorted by own time, to stdout."""
    import cProfile
    import pstats

    from autograd import value_and_grad

    from sicref.train import batch_objective

    cfg = size_config(size, method)
    params, batch = make_inputs(cfg)
    step = value_and_grad(batch_objective)
    step(params, batch, cfg)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        step(params, batch, cfg)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def run_child(args, mem_limit_gb, timeout, blas_threads=None):
    """Run this script as a fresh process for one case; returns its JSON result, with
    the 1-minute load average of the machine just before it started."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args,
           "--mem-limit-gb", str(mem_limit_gb)]
    env = dict(os.environ)
    if blas_threads:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(blas_threads)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        if "MemoryError" in proc.stderr:
            tail = [f"MemoryError under a {mem_limit_gb:g} GB address-space limit"]
        return {"error": tail[0], "wall_s": time.perf_counter() - t0, "load_before": load}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_before": load}


def mem_available_gb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return float("inf")


def machine_info():
    from importlib.metadata import version

    import numpy as np

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
    threads = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                          "MKL_NUM_THREADS") if k in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(_mem_total_gb(), 1),
            "blas": f"{blas['name']} {blas.get('version', '')}".strip(),
            "blas_config": blas.get("openblas configuration", ""),
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": version("scipy"), "autograd": version("autograd"),
            "thread_env": threads}


def _mem_total_gb():
    try:
        with open("/proc/meminfo") as f:
            return int(f.readline().split()[1]) / 2 ** 20
    except (OSError, ValueError, IndexError):
        return float("nan")


def run_all(sizes, methods, repeats, mem_limit_gb, timeout, log, with_rollout=True,
            blas_threads=None):
    results = []
    run = lambda args: run_child(args, mem_limit_gb, timeout, blas_threads)
    for size in sizes:
        cfg = size_config(size, "fast")
        B, T, N, H = dims(cfg)
        P = B * T
        row = {"size": size, "B": B, "T": T, "N": N, "H": H, "P": P}
        for method in methods:
            need_gb = REFERENCE_PEAK_MATRICES * 8 * P * P / 2 ** 30
            if method == "reference" and need_gb > min(mem_limit_gb, 0.8 * mem_available_gb()):
                row[method] = {"error": f"skipped: needs about {need_gb:.0f} GB "
                                        f"(limit {mem_limit_gb:g} GB, available "
                                        f"{mem_available_gb():.0f} GB)"}
            else:
                row[method] = run(["step", size, method, str(repeats)])
            log(f"{size} {method}: {summary(row[method])}")
        row["floor"] = run(["floor", size, str(repeats)])
        log(f"{size} floor: {summary(row['floor'])}")
        if with_rollout:
            for impl in ("plain", "permuted"):
                row[f"rollout_{impl}"] = run(["rollout", size, impl, str(repeats)])
                log(f"{size} rollout {impl}: {summary(row[f'rollout_{impl}'])}")
        results.append(row)
    return results


def summary(case):
    if "error" in case:
        return case["error"]
    t = case["times"]
    return (f"median {1e3 * statistics.median(t):.2f} ms, min {1e3 * min(t):.2f} ms "
            f"({len(t)} calls), peak RSS {case['peak_rss_mb']:.0f} MB, "
            f"load before {case.get('load_before', float('nan')):.2f}")


def _ms(case):
    return 1e3 * statistics.median(case["times"]) if "times" in case else None


def markdown_table(results):
    lines = ["| size | B, T, N, H | P | reference: median ms (peak RSS MB) | "
             "fast: median ms (min) | fast: peak RSS MB | reference / fast | "
             "floor: median ms | fast / floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref, fast, floor = r.get("reference", {}), r.get("fast", {}), r["floor"]
        ref_ms, fast_ms, floor_ms = _ms(ref), _ms(fast), _ms(floor)
        ref_cell = (f"{ref_ms:.1f} ({ref['peak_rss_mb']:.0f})" if ref_ms is not None
                    else ref.get("error", "not run"))
        fast_cell = (f"{fast_ms:.1f} ({1e3 * min(fast['times']):.1f})" if fast_ms is not None
                     else fast.get("error", "not run"))
        fast_rss = f"{fast['peak_rss_mb']:.0f}" if fast_ms is not None else ""
        ratio = f"{ref_ms / fast_ms:.1f}" if ref_ms and fast_ms else "n/a"
        floor_cell = f"{floor_ms:.2f}" if floor_ms is not None else floor.get("error", "")
        over = f"{fast_ms / floor_ms:.1f}" if fast_ms and floor_ms else "n/a"
        lines.append(f"| {r['size']} | {r['B']}, {r['T']}, {r['N']}, {r['H']} | {r['P']} | "
                     f"{ref_cell} | {fast_cell} | {fast_rss} | {ratio} | {floor_cell} | "
                     f"{over} |")
    return "\n".join(lines)


def rollout_table(results):
    lines = ["| size | plain loop: median ms (peak RSS MB) | rollout_permuted: median ms "
             "(peak RSS MB) | plain / permuted |", "|---|---|---|---|"]
    for r in results:
        if "rollout_plain" not in r:
            continue
        cells = []
        for impl in ("plain", "permuted"):
            case = r[f"rollout_{impl}"]
            cells.append(f"{_ms(case):.1f} ({case['peak_rss_mb']:.0f})" if "times" in case
                         else case.get("error", ""))
        a, b = _ms(r["rollout_plain"]), _ms(r["rollout_permuted"])
        cells.append(f"{a / b:.1f}" if a and b else "n/a")
        lines.append(f"| {r['size']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after a warm-up")
    parser.add_argument("--mem-limit-gb", type=float, default=14.0,
                        help="address-space limit of each child process")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds before a child process is stopped")
    parser.add_argument("--blas-threads", type=int,
                        help="set OPENBLAS_NUM_THREADS (and OMP_, MKL_) in each child")
    parser.add_argument("--no-rollout", action="store_true",
                        help="skip the rollout-only comparison (plain loop vs permuted)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--profile", metavar="SIZE", choices=list(SIZES),
                        help="instead of the tables, profile --repeats steps of the "
                             "first of --methods at this size")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        limit = int(args.mem_limit_gb * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        kind, size, *rest = args.child
        if kind == "step":
            out = child_step(size, rest[0], int(rest[1]))
        elif kind == "rollout":
            out = child_rollout(size, rest[0], int(rest[1]))
        else:
            out = child_floor(size, int(rest[0]))
        print(json.dumps(out))
        return 0

    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.profile:
        profile_step(args.profile, args.methods[0] if len(args.methods) == 1 else "fast",
                     args.repeats)
        return 0
    log = lambda line: print(line, file=sys.stderr, flush=True)
    info = machine_info()
    log(f"machine: {json.dumps(info)}")
    results = run_all(args.sizes, args.methods, args.repeats, args.mem_limit_gb,
                      args.timeout, log, not args.no_rollout, args.blas_threads)
    loads = [c["load_before"] for r in results for c in r.values()
             if isinstance(c, dict) and "load_before" in c]
    log(f"1-minute load average before the cases: {min(loads):.2f} to {max(loads):.2f} "
        f"on {os.cpu_count()} cores (the benchmark's own processes account for up to "
        f"about 1.5; more means other work competes)")
    print(markdown_table(results))
    if not args.no_rollout:
        print()
        print(rollout_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "command": " ".join(sys.argv),
                       "repeats": args.repeats, "blas_threads": args.blas_threads,
                       "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
