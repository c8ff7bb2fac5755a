"""Figures of an evaluation and a training run (PNG, matplotlib Agg)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402
import numpy as np  # noqa: E402

from .checkpoint import read_jsonl  # noqa: E402
from .gridness import RELIABILITY_THRESHOLD, autocorrelogram  # noqa: E402
from .tries import try_name  # noqa: E402


def _save(fig, out, name):
    fig.savefig(os.path.join(out, name), dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def unit_order(a):
    """Units sorted by module (grid modules first, by period), then by score60."""
    s = np.nan_to_num(a["scores"].score60, nan=-9.0)
    module = np.where(a["labels"] >= 0, a["labels"], 10 ** 6)
    return np.lexsort((-s, module))


def best_units(a, n):
    """The n units to show first: units of a counted module by score60, then the rest
    by score60 (a noisy low-rate unit can outscore the lattice; it is shown only after
    the module's units)."""
    s = np.nan_to_num(a["scores"].score60, nan=-9.0)
    in_module = a["labels"] >= 0
    return np.lexsort((-s, ~in_module))[:n]


def _imshow(ax, m, cmap="viridis"):
    ax.imshow(np.ma.masked_invalid(m), origin="lower", cmap=cmap, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def ratemap_grid(a, arena, out, name, max_units=128, cols=16):
    order = unit_order(a)[:max_units]
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, u in zip(axes.ravel(), order):
        _imshow(ax, a["ratemaps"][u])
        s = a["scores"].score60[u]
        mod = a["labels"][u]
        r = a.get("reliability")
        r = np.nan if r is None else r[u]
        r_text = f"r{r:.2f}" if np.isfinite(r) else "r -"
        ax.set_title(f"{u} {'m' + str(mod) if mod >= 0 else ''}\n{s:.2f} {r_text}",
                     fontsize=6, color="black" if r >= RELIABILITY_THRESHOLD else "0.55")
    fig.suptitle(f"Ratemaps, {arena:g} m arena (unit, module, score60, split-half r; grey: none or "
                 f"r < {RELIABILITY_THRESHOLD}; sorted by module then score)", fontsize=10)
    return _save(fig, out, name)


def sac_grid(a, arena, out, name, n=16, cols=8):
    s = np.nan_to_num(a["scores"].score60, nan=-9.0)
    best = best_units(a, n)
    rows = int(np.ceil(len(best) / cols))
    fig, axes = plt.subplots(2 * rows, cols, figsize=(cols * 1.4, rows * 2.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, u in enumerate(best):
        r, c = 2 * (k // cols), k % cols
        _imshow(axes[r, c], a["ratemaps"][u])
        axes[r, c].set_title(f"unit {u}", fontsize=7)
        _imshow(axes[r + 1, c], autocorrelogram(a["ratemaps"][u]), cmap="RdBu_r")
        axes[r + 1, c].set_title(f"g60 {s[u]:.2f} T {a['period_m'][u]:.2f} m", fontsize=7)
    fig.suptitle(f"Best units by score60 ({arena:g} m; units of counted modules first): "
                 f"ratemap above, autocorrelogram below", fontsize=10)
    return _save(fig, out, name)


def score_histograms(a, arena, threshold, module_periods, out, name):
    sc = a["scores"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.4))
    s60 = sc.score60[np.isfinite(sc.score60)]
    ax1.hist(s60, bins=30, color="tab:blue")
    ax1.axvline(threshold, color="k", ls="--", label=f"threshold {threshold}")
    ax1.set_xlabel("score60 (min-max)")
    ax1.set_ylabel("units")
    ax1.legend(fontsize=8)
    ok = np.isfinite(sc.score60) & np.isfinite(sc.score90)
    ax2.scatter(sc.score90[ok], sc.score60[ok], s=8)
    lim = [min(-1, np.nanmin(sc.score90[ok], initial=0)), 2]
    ax2.plot(lim, lim, "k:", lw=0.8)
    ax2.set_xlabel("score90")
    ax2.set_ylabel("score60")
    ax2.set_title("hexagonal above the diagonal", fontsize=9)
    grid = a["is_grid"]
    per = a["period_m"]
    ax3.hist(per[np.isfinite(per)], bins=30, color="0.7", label="all units")
    ax3.hist(per[grid & np.isfinite(per)], bins=30, color="tab:green", label="grid units")
    for p in module_periods:
        ax3.axvline(p, color="tab:red", ls="--")
    ax3.set_xlabel("period (m); red: module periods")
    ax3.legend(fontsize=8)
    fig.suptitle(f"Gridness and periods, {arena:g} m arena", fontsize=10)
    return _save(fig, out, name)


def distance_plot(curve, out, name):
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    x = np.array(curve["spatial"], dtype=float)
    y = np.array([np.nan if v is None else v for v in curve["neural"]], dtype=float)
    ax.plot(x, y, "o-")
    ax.set_xlabel("spatial distance |x_i - x_j| (m)")
    ax.set_ylabel("mean neural distance |g_i - g_j|")
    ax.set_title("Neural vs spatial distance", fontsize=10)
    return _save(fig, out, name)


def loss_curves(metrics_path, out, name):
    """Every loss part and the lr over steps; with the annealing gate's readings
    (gridness.jsonl next to metrics.jsonl) in one more panel and the switch marked."""
    records = read_jsonl(metrics_path)
    if not records:
        return None
    checks = read_jsonl(os.path.join(os.path.dirname(metrics_path), "gridness.jsonl"))
    switch = [c["step"] for c in checks if c.get("switch")]
    steps = np.array([r["step"] for r in records])
    keys = ["total", "separation", "invariance", "capacity", "conformal_isometry", "lr"]
    n = len(keys) + bool(checks)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 2.8))
    for ax, k in zip(axes, keys):
        ax.plot(steps, [r[k] for r in records], lw=1)
        ax.set_title(k, fontsize=9)
        if k == "lr":
            ax.set_yscale("log")
    if checks:
        ax = axes[-1]
        ax.plot([c["step"] for c in checks], [c["grid_fraction"] for c in checks], "o-",
                ms=3, lw=1)
        ax.set_title("gate: grid fraction (2 m)", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlim(0, max(steps[-1], checks[-1]["step"]) * 1.02)
    for ax in axes:
        ax.set_xlabel("step", fontsize=8)
        for s in switch:
            ax.axvline(s, color="tab:red", ls="--", lw=0.8)
    fig.tight_layout()
    return _save(fig, out, name)


OVER_TRAINING_PERIOD_LABELS = 16  # more checkpoints: module counts instead of periods


def module_labels(rows):
    """What over_training_plot writes above each checkpoint with modules: its module
    periods in m, largest first, one per line; with more than
    OVER_TRAINING_PERIOD_LABELS checkpoints only the number of modules, which fits
    between them. Returns ([(step, label)], what the labels are)."""
    with_periods = len(rows) <= OVER_TRAINING_PERIOD_LABELS
    labels = []
    for r in rows:
        periods = r["modules"]["periods"]
        if periods:
            labels.append((r["step"], "\n".join(f"{p:.2f}" for p in sorted(periods,
                                                                              reverse=True))
                           if with_periods else str(len(periods))))
    return labels, "module periods, m" if with_periods else "number of modules"


def over_training_plot(rows, arena, out, name):
    steps = [r["step"] for r in rows]
    fig, ax1 = plt.subplots(figsize=(5.5, 3.4))
    ax1.plot(steps, [r["grid_fraction"] for r in rows], "o-", label="grid fraction")
    ax1.plot(steps, [r["hexagonal_fraction"] for r in rows], "s--",
             label="grid and score60 > score90")
    ax1.plot(steps, [r["median_score60_active"] for r in rows], "^:",
             label="median score60 (active units)")
    ax1.set_xlabel("training step")
    top = max([1.5] + [r["median_score60_active"] + 0.1 for r in rows
                       if np.isfinite(r["median_score60_active"])])
    ax1.set_ylim(-0.5, top)
    ax1.axhline(0, color="0.7", lw=0.8)
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    # above the axes, clear of the curves: each checkpoint's module periods (one per
    # line), or with many checkpoints only how many modules, which fits between them
    above = blended_transform_factory(ax1.transData, ax1.transAxes)
    labels, what = module_labels(rows)
    for step, label in labels:
        ax1.text(step, 1.01, label, fontsize=6.5, ha="center", va="bottom",
                 transform=above, linespacing=1.0)
    lines = max([label.count("\n") + 1 for _, label in labels] + [1])
    ax1.set_title(f"Gridness over training, {arena:g} m arena (above: {what})", fontsize=9,
                  pad=6 + 9 * lines)
    return _save(fig, out, name)


def tries_legend(rows):
    """One legend line per try, its redrawn try's outcome after its own: e.g.
    'try 9 (seed 9013): gave up; redrawn: caught' (a 20-row legend for ten redrawn
    tries was hard to read)."""
    lines = {}
    for r in rows:
        if r.get("redrawn"):
            continue
        lines[r["try"]] = f"{try_name(r)} (seed {r['seed']}): {r['status']}"
    for r in rows:
        if r.get("redrawn") and r["try"] in lines:
            lines[r["try"]] += f"; redrawn: {r['status']}"
    return [lines[t] for t in sorted(lines)]


def tries_plot(rows, threshold, out, name):
    """The gate's readings of every try of a main job; solid lines caught a lattice."""
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    drawn = set()
    for r in rows:
        checks = read_jsonl(os.path.join(r["run_dir"], "gridness.jsonl"), partial_ok=True)
        if not checks:
            continue
        drawn.add(r["try"])
        colour = f"C{r['try'] % 10}"
        # a redrawn try is drawn on from where its try gave up
        shift = next((p["steps"] for p in rows if p["try"] == r["try"]
                      and not p.get("redrawn")), 0) if r.get("redrawn") else 0
        ax.plot([shift + c["step"] for c in checks], [c["grid_fraction"] for c in checks],
                ("s" if r.get("redrawn") else "o") + ("-" if r["status"] == "caught"
                                                      else "--"),
                color=colour, ms=3, lw=2 if r["status"] == "caught" else 1)
        for c in checks:
            if c.get("switch"):
                ax.plot(shift + c["step"], c["grid_fraction"], "*", color=colour, ms=13,
                        markeredgecolor="k", zorder=5)
    ax.axhline(threshold, color="0.5", ls=":", lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("grid fraction (2 m)")
    ax.set_ylim(-0.02, 1.0)
    ax.set_title("Gate readings of every try (*: the gate opened; dotted: threshold; "
                 "solid: caught)", fontsize=9)
    labels = tries_legend([r for r in rows if r["try"] in drawn])
    tries = sorted(drawn)
    handles = [Line2D([], [], color=f"C{t % 10}", marker="o", ms=3, lw=1) for t in tries]
    if any(r.get("redrawn") for r in rows if r["try"] in drawn):
        handles += [Line2D([], [], color="0.4", marker="o", ms=3, lw=0),
                    Line2D([], [], color="0.4", marker="s", ms=3, lw=0)]
        labels += ["circles: the try", "squares: its redrawn try, from the try's last step"]
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    return _save(fig, out, name)


def arenas_side_by_side(arrays, out, name, n_units=8):
    arenas = sorted(arrays)
    ref = arrays[2.0] if 2.0 in arrays else arrays[arenas[0]]
    units = best_units(ref, n_units)
    fig, axes = plt.subplots(len(units), len(arenas),
                             figsize=(2.0 * len(arenas), 2.35 * len(units)), squeeze=False)
    for r, u in enumerate(units):
        for c, L in enumerate(arenas):
            a = arrays[L]
            _imshow(axes[r, c], a["ratemaps"][u])
            axes[r, c].set_title(f"unit {u}, {L:g} m\ng60 {a['scores'].score60[u]:.2f} "
                                 f"T {a['period_m'][u]:.2f} m", fontsize=7)
    fig.suptitle("Same units across arenas (best by score60 in the reference arena, units "
                 "of counted modules first)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, out, name)


def evaluation_figures(summary, arrays, out, metrics_path=None):
    """Write every figure of an evaluation; returns the file names."""
    names = []
    for L, a in sorted(arrays.items()):
        s = summary["arenas"][f"{L:g}m"]
        tag = f"{L:g}m"
        names.append(ratemap_grid(a, L, out, f"ratemaps_{tag}.png"))
        names.append(sac_grid(a, L, out, f"sacs_{tag}.png"))
        names.append(score_histograms(a, L, s["grid_threshold"], s["modules"]["periods"],
                                      out, f"gridness_{tag}.png"))
    names.append(distance_plot(summary["distance_curve"], out, "distance.png"))
    if len(arrays) > 1:
        names.append(arenas_side_by_side(arrays, out, "arenas.png"))
    if metrics_path:
        names.append(loss_curves(metrics_path, out, "losses.png"))
    return [n for n in names if n]
