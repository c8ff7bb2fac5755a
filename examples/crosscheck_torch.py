"""An independent PyTorch implementation of SIC (SPEC §2-§4), checked against sicref.

Reads a SPEC §8.1 params file and a §8.2 batch file, computes the states, every loss
term and the gradient of the total loss with torch autograd, and writes a §8.3 result
file that `sicref compare` sets beside `sicref crosscheck`'s:

    sicref init-params --preset tiny --seed 0 --out params.npz
    sicref make-batch  --preset tiny --seed 1 --out batch.npz
    sicref crosscheck  params.npz batch.npz --out ref.npz
    python examples/crosscheck_torch.py params.npz batch.npz --out torch64.npz --dtype float64
    sicref compare ref.npz torch64.npz                      # rtol 1e-9
    python examples/crosscheck_torch.py params.npz batch.npz --out torch32.npz --dtype float32
    sicref compare ref.npz torch32.npz --rtol 1e-4

It stands alone: numpy, json and torch only (no sicref import), so it is also a template
for exporting a PyTorch model (see `SICNet.from_arrays` / `to_arrays`: a file's W is
(in, out), an nn.Linear weight is (out, in)). Pair masks (dx > sigma_x, dx < sigma_x)
come from the float64 positions of the file in both precisions, so a float32 run cannot
flip a pair lying within rounding of sigma_x.

Exit codes: 0 done; 2 unusable input files; 3 torch is not installed (nothing written).
"""

import argparse
import json
import os
import sys

import numpy as np

try:
    import torch
except ImportError:
    torch = None

PAPER_LOSS = {"sigma_x": 0.05, "sigma_g": 0.4, "lambda_sep": 1.0, "lambda_inv": 0.1,
              "lambda_cap": 0.5, "lambda_coniso": 0.0, "reduction": "mean"}
EXIT_BAD_FILE = 2
EXIT_NO_TORCH = 3


def read_file(path, expected_format):
    """(meta, arrays) of a SPEC §8 file; a ValueError names what is wrong."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")[()]))
    if meta.get("format") != expected_format or meta.get("version") != 1:
        raise ValueError(f"{path}: expected format {expected_format!r} version 1, "
                         f"got {meta.get('format')!r} version {meta.get('version')!r}")
    return meta, arrays


if torch is not None:
    class SICNet(torch.nn.Module):
        """SPEC §3: velocity MLP -> W(v) (N x N, row-major), NormReLU recurrence from g0."""

        def __init__(self, mlp_sizes, n_units, norm_eps):
            super().__init__()
            self.n_units, self.norm_eps = n_units, norm_eps
            self.layers = torch.nn.ModuleList(torch.nn.Linear(i, o, dtype=torch.float64)
                                              for i, o in zip(mlp_sizes[:-1], mlp_sizes[1:]))
            self.g0_raw = torch.nn.Parameter(torch.zeros(n_units, dtype=torch.float64))

        @classmethod
        def from_arrays(cls, meta, arrays):
            """Load SPEC §8.1 arrays: the file's W{k} is (in, out), nn.Linear's is (out, in)."""
            net = cls(meta["mlp_sizes"], meta["n_units"], meta["norm_eps"])
            with torch.no_grad():
                for k, layer in enumerate(net.layers):
                    layer.weight.copy_(torch.from_numpy(arrays[f"mlp/W{k}"].T))
                    layer.bias.copy_(torch.from_numpy(arrays[f"mlp/b{k}"]))
                net.g0_raw.copy_(torch.from_numpy(arrays["g0_raw"]))
            return net

        def to_arrays(self, grads=False):
            """SPEC §8.1 names -> float64 arrays of the parameters (or of their .grad)."""
            pick = (lambda p: p.grad) if grads else (lambda p: p)
            out = {"g0_raw": pick(self.g0_raw)}
            for k, layer in enumerate(self.layers):
                out[f"mlp/W{k}"] = pick(layer.weight).T
                out[f"mlp/b{k}"] = pick(layer.bias)
            return {k: v.detach().cpu().double().numpy() for k, v in out.items()}

        def norm_relu(self, x):
            """SPEC §3.2: relu(x) / max(||relu(x)||, eps)."""
            r = torch.relu(x)
            norm = torch.sqrt(torch.clamp((r * r).sum(-1, keepdim=True), min=self.norm_eps ** 2))
            return r / norm

        def forward(self, velocities):
            """SPEC §3.1: returns g_0 (N,) and g_1..g_T (B, T, N)."""
            B, T, _ = velocities.shape
            N = self.n_units
            # Every velocity of a batch is one of T base velocities (SPEC §3 note): run
            # the MLP on the distinct ones only.
            distinct, inverse = torch.unique(velocities.reshape(-1, 2), dim=0,
                                             return_inverse=True)
            y = distinct
            for k, layer in enumerate(self.layers):
                y = layer(y)
                if k < len(self.layers) - 1:
                    y = torch.relu(y)
            W = y.reshape(-1, N, N)[inverse].reshape(B, T, N, N)
            g0 = self.norm_relu(self.g0_raw)
            g, states = g0.expand(B, N), []
            for t in range(T):
                g = self.norm_relu(torch.einsum("bij,bj->bi", W[:, t], g))
                states.append(g)
            return g0, torch.stack(states, dim=1)


def pair_masks(positions, sigma_x):
    """SPEC §4 pair sets from float64 positions: far dx > sigma_x, near dx < sigma_x, i != j."""
    x = positions.reshape(-1, 2)
    dx = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    near = dx < sigma_x
    np.fill_diagonal(near, False)
    return dx > sigma_x, near


def sic_losses(g0, states, positions, velocities, loss):
    """SPEC §4: every loss term and the weighted total, as torch scalars."""
    B, T, N = states.shape
    g = states.reshape(B * T, N)
    far, near = (torch.from_numpy(m).to(g.device) for m in pair_masks(positions, loss["sigma_x"]))
    # ||g_i - g_j||^2 from the differences themselves, not from |g_i|^2 + |g_j|^2 - 2 g_i.g_j
    dg2 = torch.cdist(g, g, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    mean = loss["reduction"] == "mean"

    def reduce(values, mask):
        total = values[mask].sum()
        return total / mask.sum() if mean and mask.any() else total

    parts = {"separation": reduce(torch.exp(-dg2 / (2 * loss["sigma_g"] ** 2)), far),
             "invariance": reduce(dg2, near),
             "capacity": -(g.mean(0) ** 2).sum()}
    # Conformal isometry: step length in neural space over step length in space.
    speed = np.sqrt((velocities ** 2).sum(-1))
    steps = torch.from_numpy((speed > 0) & (speed < loss["sigma_x"])).to(g.device)
    previous = torch.cat([g0.expand(B, 1, N), states[:, :-1]], dim=1)
    d2 = ((states - previous) ** 2).sum(-1)
    ratio = torch.sqrt(torch.clamp(d2, min=1e-30)) / torch.from_numpy(speed).to(states)
    r = ratio[steps]
    if r.numel() < 2:
        parts["conformal_isometry"] = states.sum() * 0.0
    else:
        dev2 = (r - r.mean()) ** 2
        parts["conformal_isometry"] = dev2.mean() if mean else dev2.sum()
    parts["total"] = (loss["lambda_sep"] * parts["separation"]
                      + loss["lambda_inv"] * parts["invariance"]
                      + loss["lambda_cap"] * parts["capacity"]
                      + loss["lambda_coniso"] * parts["conformal_isometry"])
    return parts


def run(params_path, batch_path, dtype="float64", device="cpu"):
    """The SPEC §8.3 result arrays (float64) for a params and a batch file."""
    pmeta, parrays = read_file(params_path, "sicref-params")
    bmeta, barrays = read_file(batch_path, "sicref-batch")
    velocities = barrays["velocities"].astype(np.float64)
    positions = barrays.get("positions", np.cumsum(velocities, axis=1)).astype(np.float64)
    loss = {**PAPER_LOSS, **bmeta.get("loss", {})}
    precision = {"float64": torch.float64, "float32": torch.float32}[dtype]
    net = SICNet.from_arrays(pmeta, parrays).to(device=device, dtype=precision)
    g0, states = net(torch.from_numpy(velocities).to(device=device, dtype=precision))
    parts = sic_losses(g0, states, positions, velocities, loss)
    parts["total"].backward()
    result = {"initial_state": g0, "hidden_states": states}
    result.update({f"loss/{k}": v for k, v in parts.items()})
    result = {k: v.detach().cpu().double().numpy() for k, v in result.items()}
    result.update({f"grad/{k}": v for k, v in net.to_arrays(grads=True).items()})
    return result, loss


def write_result(path, result, meta):
    """Atomic write of a SPEC §8.3 file (temp file in the same folder, then os.replace)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **result)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("params")
    parser.add_argument("batch")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    args = parser.parse_args(argv)
    if torch is None:
        print("crosscheck_torch: PyTorch is not installed (pip install torch); "
              "nothing computed", file=sys.stderr)
        return EXIT_NO_TORCH
    try:
        result, loss = run(args.params, args.batch, args.dtype, args.device)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # RuntimeError: shapes
        print(f"crosscheck_torch: error: {e}", file=sys.stderr)
        return EXIT_BAD_FILE
    write_result(args.out, result, {"format": "sicref-result", "version": 1,
                                    "producer": f"examples/crosscheck_torch.py (torch "
                                                f"{torch.__version__})",
                                    "dtype": args.dtype, "device": args.device, "loss": loss})
    print(f"loss/total {float(result['loss/total']):.17g}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
