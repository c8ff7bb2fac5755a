"""Memory-bounded separation and invariance (SPEC §4) with hand-derived gradients.

The same two terms as the reference formulation in `sicref.losses`, which builds
P x P matrices, computed here over the upper triangle of the pair matrix in row blocks,
so that memory is O(block x P) however large P = B*T grows.

* Near pairs (dx <= sigma_x) are few: a k-d tree lists them, and dx is then recomputed
  exactly as `losses.spatial_distances` does, so that the boundary rule of SPEC §4
  (dx == sigma_x: in neither term) matches the reference to the last bit.
* Separation: for a row block I and the columns j >= min(I), one matrix product of
  augmented factors gives the exponent
      -dg2 / (2 sigma_g^2) = g_i.g_j / sigma_g^2 - c_i - c_j,   c_i = |g_i|^2 / (2 sigma_g^2),
  which is clipped at 0 like the reference's max(dg2, 0), so exp never overflows
  (zero states give exp(0) = 1). Entries on or below the diagonal and near pairs are
  set to 0; what is left is exactly the far pairs. Zeroing rather than subtracting
  S(near) from S(all) keeps full relative accuracy when few pairs are far.
* Invariance: the sum of ||g_i - g_j||^2 over the list of close pairs.
* Each unordered pair is visited once; sums over ordered pairs are twice that.

Gradients (ordered-pair sums, K the far-masked kernel matrix, A the close-pair
adjacency, both symmetric with zero diagonal):
    d S_sep / d g_i = -(2 / sigma_g^2) (sum_j K_ij g_i - (K G)_i)
    d S_inv / d g_i = 4 (sum_j A_ij g_i - (A G)_i)
Both are computed in the same pass as the values when g is being differentiated and
attached through one autograd primitive. Only first derivatives are provided.
"""

import numpy as np
from autograd.extend import defvjp, primitive
from autograd.tracer import getval, isbox
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

BLOCK_BYTES = 16 * 2 ** 20  # size of one block of the kernel matrix (16 MiB)
CHUNK_BYTES = 2 * 2 ** 20  # one chunk of close-pair differences (stays in cache)


def near_pairs(x, sigma_x):
    """Unordered pairs i < j with dx <= sigma_x, ordered by i, and which are close.

    Returns (i, j, close): int arrays and a bool array, close = dx < sigma_x. Pairs
    with dx == sigma_x are near but not close: SPEC §4 puts them in neither term.
    """
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty, np.zeros(0, dtype=bool)
    # A slightly larger query radius makes the tree's candidates a superset whatever
    # its own rounding; the exact test below decides.
    slack = 1e-9 * (sigma_x + np.max(np.abs(x)))
    ij = cKDTree(x).query_pairs(sigma_x + slack, output_type="ndarray")
    i, j = ij[:, 0].astype(np.intp), ij[:, 1].astype(np.intp)
    diff = x[i] - x[j]
    dx = np.sqrt(np.sum(diff * diff, axis=-1))
    near = dx <= sigma_x
    i, j, dx = i[near], j[near], dx[near]
    order = np.argsort(i, kind="stable")
    return i[order], j[order], dx[order] < sigma_x


def pair_counts(n_points, pairs):
    """Numbers of ordered far pairs (dx > sigma_x) and close pairs (dx < sigma_x, i != j)."""
    i, _, close = pairs
    n_close = int(np.count_nonzero(close))
    return n_points * (n_points - 1) - 2 * len(i), 2 * n_close


def default_block_rows(n_points):
    """Rows per block: a block of BLOCK_BYTES, and about 8 blocks when P is small (a
    smaller block wastes less of its square below the diagonal), 64 rows at least."""
    target = min(BLOCK_BYTES // (8 * max(n_points, 1)), -(-n_points // 8))
    return int(max(target, min(n_points, 64), 1))


def separation_sum(g, pairs, sigma_g, with_grad=False, block_rows=None):
    """SPEC §4: sum over ordered far pairs of exp(-dg2 / (2 sigma_g^2)), and its gradient.

    Returns (value, gradient (P, N) or None). Memory O(block_rows x P).
    """
    P, N = g.shape
    i_near, j_near = pairs[0], pairs[1]
    c = np.sum(g * g, axis=1) / (2.0 * sigma_g ** 2)
    ones = np.ones((P, 1))
    rows = np.hstack([g / sigma_g, -c[:, None], ones])  # rows . cols = -dg2 / (2 sg^2)
    cols = np.ascontiguousarray(np.hstack([g / sigma_g, ones, -c[:, None]]).T)
    g1 = np.hstack([g, ones])  # K @ g1 gives K G and the row sums of K together
    kg1 = np.zeros((P, N + 1)) if with_grad else None
    b = max(1, min(block_rows or default_block_rows(P), P))
    work = np.empty(b * P)
    lower = np.tril(np.ones((b, b), dtype=bool))
    bounds = np.searchsorted(i_near, np.arange(0, P + b, b))
    total = 0.0
    for k, i0 in enumerate(range(0, P, b)):
        i1 = min(i0 + b, P)
        bi, w = i1 - i0, P - i0
        E = work[:bi * w].reshape(bi, w)
        np.matmul(rows[i0:i1], cols[:, i0:], out=E)
        np.minimum(E, 0.0, out=E)
        np.exp(E, out=E)
        np.copyto(E[:, :bi], 0.0, where=lower[:bi, :bi])
        s, e = bounds[k], bounds[k + 1]
        E[i_near[s:e] - i0, j_near[s:e] - i0] = 0.0
        total += float(np.sum(E))
        if with_grad:
            kg1[i0:i1] += E @ g1[i0:]
            kg1[i0:] += E.T @ g1[i0:i1]
    if not with_grad:
        return 2.0 * total, None
    return 2.0 * total, -(2.0 / sigma_g ** 2) * (kg1[:, N:] * g - kg1[:, :N])


def invariance_sum(g, pairs, with_grad=False):
    """SPEC §4: sum over ordered close pairs of dg2 = ||g_i - g_j||^2, and its gradient."""
    P, N = g.shape
    i, j, close = pairs
    i, j = i[close], j[close]
    step = max(1, CHUNK_BYTES // (8 * max(N, 1)))
    total = 0.0
    for s in range(0, len(i), step):
        d = g[i[s:s + step]] - g[j[s:s + step]]
        total += float(np.einsum("pn,pn->", d, d))
    value = 2.0 * total
    if not with_grad:
        return value, None
    # A = U + U^T with U the close pairs i < j, rows already in order of i
    per_row = np.bincount(i, minlength=P)
    upper = csr_matrix((np.ones(len(i)), j, np.concatenate([[0], np.cumsum(per_row)])),
                       shape=(P, P))
    degree = (per_row + np.bincount(j, minlength=P))[:, None]
    return value, 4.0 * (degree * g - (upper @ g + upper.T @ g))


@primitive
def _with_gradients(g, value, d_sep, d_inv):
    """value = [S_sep, S_inv], functions of g with gradients d_sep, d_inv (computed with
    it): the VJP of a vector v is v_sep d_sep + v_inv d_inv."""
    return value


defvjp(_with_gradients, lambda ans, g, value, d_sep, d_inv: lambda v: v[0] * d_sep + v[1] * d_inv)


def pair_sums(g, pairs, sigma_g, block_rows=None):
    """[S_sep, S_inv]: SPEC §4 sums over ordered pairs, differentiable in g.

    The gradients are computed in the same pass, and only when g is being
    differentiated.
    """
    with_grad = isbox(g)
    if with_grad and isbox(g._value):
        raise NotImplementedError("the fast pair terms have first derivatives only; "
                                  "use LossConfig.method = 'reference' for higher ones")
    g_val = np.asarray(getval(g), dtype=np.float64)
    sep, d_sep = separation_sum(g_val, pairs, sigma_g, with_grad, block_rows)
    inv, d_inv = invariance_sum(g_val, pairs, with_grad)
    value = np.array([sep, inv])
    if not with_grad:
        return value
    return _with_gradients(g, value, d_sep, d_inv)


def pair_terms_fast(g, x, sigma_x, sigma_g, reduction="mean", block_rows=None):
    """SPEC §4: (separation, invariance), the blockwise form of the reference terms."""
    pairs = near_pairs(x, sigma_x)
    sums = pair_sums(g, pairs, sigma_g, block_rows)
    sep, inv = sums[0], sums[1]
    if reduction == "sum":
        return sep, inv
    n_far, n_close = pair_counts(len(g), pairs)
    return (sep / n_far if n_far > 0 else 0.0 * sep,
            inv / n_close if n_close > 0 else 0.0 * inv)
