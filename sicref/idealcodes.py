"""Ideal grid codes and their SIC loss: does the loss itself prefer one module or two?

A trained network gives one code; this module asks what the SIC loss (SPEC §4) says about
codes no network has to learn. An ideal module is a hexagonal lattice of period
`period` whose units have phases on a regular `n_side` x `n_side` grid of the unit cell;
unit i's rate at position x is

    max(exp(beta * (s_i(x) - 3)) - threshold, 0),  s_i(x) = sum_k cos(k_k . (x - phase_i)),

with three wave vectors k_k of length 4 pi / (sqrt(3) period) at 60 degrees to each other
(s_i is 3 at the unit's field centres). Small beta gives broad, cosine-like fields, large
beta narrow ones; the threshold silences the troughs. A code is one or more modules, each
scaled by a weight, concatenated and divided by its norm: non-negative and unit-norm like
the network's states (SPEC §3.2).

`LossProbe` draws a fixed set of training batches (SPEC §2) and scores any code by the
losses of SPEC §4 (the terms of sicref.losses) on their positions, as if the network had
produced that code at every step: an ideal code depends on position only, so its
invariance term measures only how much it changes within sigma_x. `fit_code`
finds a code's best periods and field shapes by Nelder-Mead with those batches held
fixed, so that two codes are compared on the same points.
"""

from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize

from sicref.data import sample_batch
from sicref.losses import (capacity_loss, invariance_term, neural_sq_distances, pair_masks,
                           separation_term)
from sicref.model import rollout_permuted

WAVE_ANGLES = np.deg2rad([90.0, 150.0, 210.0])


@dataclass(frozen=True)
class Module:
    """One ideal module: lattice period (m), phases on an n_side x n_side grid, field shape."""

    period: float
    n_side: int = 10
    beta: float = 1.0
    threshold: float = 0.0
    weight: float = 1.0
    orientation: float = 0.0  # degrees

    @property
    def n_units(self):
        return self.n_side * self.n_side

    def lattice_vectors(self):
        """The two primitive lattice vectors (2, 2), rows, in metres."""
        a = np.deg2rad([self.orientation, self.orientation + 60.0])
        return self.period * np.stack([np.cos(a), np.sin(a)], axis=1)

    def wave_vectors(self):
        """The three wave vectors (3, 2): each is orthogonal to one lattice direction."""
        k = 4.0 * np.pi / (np.sqrt(3.0) * self.period)
        a = np.deg2rad(self.orientation) + WAVE_ANGLES
        return k * np.stack([np.cos(a), np.sin(a)], axis=1)

    def phases(self):
        """Field centres of the units (n_side**2, 2): a regular grid of the unit cell."""
        u = (np.arange(self.n_side) + 0.5) / self.n_side
        a1, a2 = self.lattice_vectors()
        return (u[:, None, None] * a1 + u[None, :, None] * a2).reshape(-1, 2)

    def rates(self, x):
        """Rates (P, n_units) at positions x (P, 2), before the code's normalisation."""
        x = np.asarray(x, dtype=np.float64)
        s = np.cos((x[:, None, :] - self.phases()[None]) @ self.wave_vectors().T).sum(-1)
        return self.weight * np.maximum(np.exp(self.beta * (s - 3.0)) - self.threshold, 0.0)


def validate_modules(modules):
    modules = tuple(modules)
    if not modules:
        raise ValueError("a code needs at least one module")
    for i, m in enumerate(modules):
        checks = (("period", m.period > 0, "> 0"), ("n_side", m.n_side >= 1, ">= 1"),
                  ("beta", m.beta > 0, "> 0"), ("threshold", 0 <= m.threshold < 1, "in [0, 1)"),
                  ("weight", m.weight > 0, "> 0"))
        for name, ok, allowed in checks:
            if not (ok and np.isfinite(getattr(m, name))):
                raise ValueError(f"module {i}: {name} = {getattr(m, name)!r}; must be {allowed}")
    return modules


def ideal_code(x, modules, eps=1e-8):
    """The code (P, N) of positions x (P, 2): the modules' rates side by side, unit-norm."""
    g = np.concatenate([m.rates(x) for m in validate_modules(modules)], axis=1)
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), eps)


class LossProbe:
    """The SIC loss (SPEC §4, "mean" reduction) of position codes on fixed training batches.

    data: a DataConfig (batch_size, seq_len, vmax); loss: a LossConfig. The batches come
    from sicref.data.sample_batch with numpy's default_rng(seed); the pair masks are
    computed once. The conformal-isometry term is left out (it is about steps, not places).
    """

    def __init__(self, data, loss, n_batches=4, seed=0):
        if loss.reduction != "mean":
            raise ValueError(f"loss.reduction = {loss.reduction!r}; LossProbe supports 'mean'")
        if n_batches < 1:
            raise ValueError(f"n_batches = {n_batches}; must be >= 1")
        self.loss = loss
        rng = np.random.default_rng(seed)
        self.batches = [sample_batch(rng, data.batch_size, data.seq_len, data.vmax)
                        for _ in range(n_batches)]
        self.positions = [b.positions.reshape(-1, 2) for b in self.batches]
        self.masks = [pair_masks(x, loss.sigma_x) for x in self.positions]

    def parts(self, modules):
        """Mean over the batches of (separation, invariance, capacity)."""
        return self._parts(ideal_code(x, modules) for x in self.positions)

    def network_parts(self, params, norm_eps=1e-8):
        """The same for a network's states on the same batches (SPEC §3)."""
        n = len(params["g0_raw"])
        return self._parts(rollout_permuted(params, b.base, b.perm, norm_eps)[1].reshape(-1, n)
                           for b in self.batches)

    def _parts(self, codes):
        out = []
        for g, (far, close) in zip(codes, self.masks):
            dg2 = neural_sq_distances(g)
            out.append((separation_term(dg2, far, self.loss.sigma_g),
                        invariance_term(dg2, close), capacity_loss(g)))
        return tuple(float(v) for v in np.mean(out, axis=0))

    def total(self, modules=None, parts=None):
        """The weighted sum of SPEC §4 for a code (or for given parts)."""
        sep, inv, cap = self.parts(modules) if parts is None else parts
        c = self.loss
        return c.lambda_sep * sep + c.lambda_inv * inv + c.lambda_cap * cap


def _to_modules(z, template):
    """Free parameters -> modules: log period, log beta, logit threshold, log weight."""
    out = []
    for i, m in enumerate(template):
        lp, lb, lt, lw = z[4 * i: 4 * i + 4]
        out.append(replace(m, period=float(np.exp(lp)), beta=float(np.exp(lb)),
                           threshold=float(1.0 / (1.0 + np.exp(-np.clip(lt, -50, 50)))),
                           weight=1.0 if i == 0 else float(np.exp(lw))))
    return tuple(out)


def _from_modules(modules):
    z = []
    for m in modules:
        t = min(max(m.threshold, 1e-9), 1 - 1e-9)
        z += [np.log(m.period), np.log(m.beta), np.log(t / (1 - t)), np.log(m.weight)]
    return np.array(z)


@dataclass(frozen=True)
class Fit:
    modules: tuple
    total: float
    parts: tuple  # separation, invariance, capacity
    evaluations: int


def fit_code(probe, starts, max_evaluations=600, tolerance=1e-6):
    """Lowest-loss code reachable from each start (a tuple of Modules); returns the best Fit.

    Free per module: period, beta, threshold and (all but the first) weight; n_side and
    orientation stay as given. Nelder-Mead on the fixed batches of `probe`.
    """
    best = None
    for start in starts:
        template = validate_modules(start)
        z0 = _from_modules(template)
        free = np.ones(len(z0), bool)
        free[3] = False  # the first module's weight sets the scale; the norm removes it

        def objective(zf):
            z = z0.copy()
            z[free] = zf
            return probe.total(_to_modules(z, template))

        res = minimize(objective, z0[free], method="Nelder-Mead",
                       options=dict(maxfev=max_evaluations, xatol=1e-4, fatol=tolerance))
        z = z0.copy()
        z[free] = res.x
        modules = _to_modules(z, template)
        fit = Fit(modules, probe.total(modules), probe.parts(modules), int(res.nfev))
        if best is None or fit.total < best.total:
            best = fit
    return best
