"""CanICA in torch: per-group PCA, group PCA, and spatial FastICA with restarts.

The algorithm mirrors :class:`nilearn.decomposition.CanICA`:

1. each group of tokens (a "subject") is z-scored and reduced to its top
   ``n_components`` right singular vectors scaled by their singular values
   (randomized SVD);
2. the reduced groups are stacked, each row normalized to unit norm
   (nilearn's ``do_cca``), and the top ``n_components`` right singular vectors
   of the stack are the group PCA maps. With many groups the stack is merged
   incrementally (keep the top rows after each merge) so memory stays bounded;
3. symmetric FastICA over voxels (spatial ICA) unmixes the group PCA maps,
   restarted from several random initializations; the restart whose least
   sparse map is sparsest (smallest maximum L1 norm) is kept.

Everything runs on the device of the input tensors (CPU or CUDA).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils import check_random_state

__all__ = ["GroupPCA", "fastica", "fastica_layers", "randomized_row_basis"]


def _orthonormal(y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(y, mode="reduced").Q


def randomized_row_basis(a: torch.Tensor, k: int, n_oversamples: int = 10, n_iter: int = 5,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Top ``k`` right singular vectors of ``a`` scaled by their singular values.

    Parameters
    ----------
    a : torch.Tensor of shape (n_rows, n_columns)
        Tokens × voxels.
    k : int
        Number of singular vectors.
    n_oversamples, n_iter : int
        Randomized SVD settings (Halko et al. 2011) with QR-normalized power
        iterations.
    generator : torch.Generator, optional
        Source of the random test matrix (on the CPU).

    Returns
    -------
    torch.Tensor of shape (min(k, rank bound), n_columns)
        Rows ``S_i * V_i`` in decreasing order of singular value, float32.
    """
    m, n = a.shape
    k = min(k, m, n)
    n_test = min(k + n_oversamples, m, n)
    if n_test >= min(m, n) or min(m, n) <= 64:
        # Small: exact, through the smaller Gram matrix in float64.
        return _exact_row_basis(a, k)
    omega = torch.randn(n, n_test, generator=generator, dtype=torch.float32).to(a.device, a.dtype)
    y = a @ omega
    for _ in range(n_iter):
        q = _orthonormal(y)
        z = _orthonormal(a.T @ q)
        y = a @ z
    q = _orthonormal(y)                         # (m, n_test): range of a
    b = q.T @ a                                 # (n_test, n)
    return _exact_row_basis(b, k)


def _exact_row_basis(b: torch.Tensor, k: int, chunk: int = 1 << 16) -> torch.Tensor:
    """Top ``k`` rows ``S V^T`` of ``b`` (few rows) through its float64 Gram matrix."""
    r = b.shape[0]
    gram = torch.zeros(r, r, dtype=torch.float64, device=b.device)
    for start in range(0, b.shape[1], chunk):
        block = b[:, start:start + chunk].to(torch.float64)
        gram += block @ block.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)[:k]
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    # S V^T = U^T b  (the singular values are kept as the rows' norms)
    return (evecs.T.to(b.dtype) @ b).to(torch.float32)


class GroupPCA:
    """Incremental group PCA of reduced groups (rows: components, columns: voxels).

    Parameters
    ----------
    n_components : int
        Number of group components.
    max_rows : int
        When the stacked rows exceed this, they are merged into their top
        ``max_rows // 2`` (at least ``2 * n_components``) scaled singular vectors.
        With at most ``max_rows`` rows overall the result is exact.
    normalize : bool
        Normalize each added row to unit norm (CanICA's CCA step); False keeps
        the singular values, so the result is the PCA of the stacked groups.
    """

    def __init__(self, n_components: int, max_rows: int, normalize: bool = True) -> None:
        self.n_components = n_components
        self.normalize = normalize
        self.max_rows = max(max_rows, 4 * n_components)
        self._rows: list[torch.Tensor] = []
        self.n_groups = 0

    def add(self, reduced: torch.Tensor) -> None:
        """Add one group's reduced rows (normalized to unit norm if ``normalize``)."""
        if self.normalize:
            norms = torch.linalg.vector_norm(reduced, dim=1, keepdim=True)
            reduced = reduced / torch.where(norms > 0, norms, torch.ones_like(norms))
        self._rows.append(reduced)
        self.n_groups += 1
        if sum(r.shape[0] for r in self._rows) > self.max_rows:
            stacked = torch.cat(self._rows)
            keep = max(self.max_rows // 2, 2 * self.n_components)
            self._rows = [_exact_row_basis(stacked, keep)]

    def components(self) -> torch.Tensor:
        """The group PCA maps: orthonormal rows, shape (n_components, n_voxels)."""
        if not self._rows:
            raise ValueError("No group was added to the group PCA.")
        stacked = torch.cat(self._rows)
        rows = _exact_row_basis(stacked, self.n_components)
        norms = torch.linalg.vector_norm(rows, dim=1)
        rank = int((norms > 1e-6 * norms.max().clamp_min(1e-30)).sum())
        if rank < self.n_components:
            raise ValueError(
                f"The data span only {rank} independent directions but n_components="
                f"{self.n_components} were asked for: lower n_components or give more "
                "(and more varied) tokens.")
        return rows / norms[:, None]


def _sym_decorrelation(w: torch.Tensor) -> torch.Tensor:
    """``(W W^T)^{-1/2} W`` for a batch of square matrices (float64 recommended).

    Eigenvalues are floored at machine precision relative to the largest, so a
    nearly rank-deficient ``W`` gives an orthogonal matrix, never inf or NaN.
    """
    s, u = torch.linalg.eigh(w @ w.transpose(-1, -2))
    floor = s.amax(dim=-1, keepdim=True) * torch.finfo(w.dtype).eps
    s = torch.maximum(s, floor.clamp_min(torch.finfo(w.dtype).tiny))
    return (u * s.rsqrt().unsqueeze(-2)) @ u.transpose(-1, -2) @ w


def _contrast(fun: str, wx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if fun == "logcosh":
        gx = torch.tanh(wx)
        g_x = (1 - gx.pow(2)).mean(dim=-1)
    elif fun == "cube":
        gx = wx.pow(3)
        g_x = 3 * wx.pow(2).mean(dim=-1)
    elif fun == "exp":
        sq = wx.pow(2)
        e = torch.exp(-sq / 2)
        gx = wx * e
        g_x = ((1 - sq) * e).mean(dim=-1)
    else:
        raise ValueError(f"Unknown FastICA contrast fun={fun!r}; use 'logcosh', 'cube' "
                         "or 'exp'.")
    return gx, g_x


def _step(w: torch.Tensor, x: torch.Tensor, fun: str, iter_dtype: torch.dtype):
    """One fixed-point update of the unmixing matrices ``w`` (..., k, k; float64) on
    the whitened data ``x`` (..., k, voxels; ``iter_dtype``, broadcast against ``w``):
    the new matrices (where they are finite; else ``w``), whether they were finite,
    and their distance from ``w`` (scikit-learn's ``lim``)."""
    gx, g_x = _contrast(fun, w.to(iter_dtype) @ x)                    # (..., k, v), (..., k)
    w1 = (gx @ x.transpose(-1, -2)).to(torch.float64) / x.shape[-1] \
        - g_x.to(torch.float64).unsqueeze(-1) * w
    w1 = _sym_decorrelation(w1)
    ok = torch.isfinite(w1).flatten(-2).all(dim=-1)
    w1 = torch.where(ok[..., None, None], w1, w)
    lim = (torch.einsum("...ij,...ij->...i", w1, w).abs() - 1).abs().amax(dim=-1)
    return w1, ok, lim


def _iterate(x1: torch.Tensor, w_init: torch.Tensor, fun: str, max_iter: int, tol: float,
             iter_dtype: torch.dtype) -> tuple[torch.Tensor, list[int], list[bool], list[bool]]:
    """FastICA fixed-point iterations of a batch of restarts.

    ``x1`` is the whitened data (k × voxels) of every restart, or one per
    restart (r × k × voxels: independent unmixings, e.g. one per layer). The
    products with the data run in ``iter_dtype``; the unmixing matrices,
    their update and the symmetric decorrelation stay in float64 (they are
    k × k, so this costs nothing and keeps a float32 run from collapsing).

    Returns
    -------
    w : (r, k, k) float64, n_iter, converged, finite (per restart)
    """
    x = x1.to(iter_dtype)
    w = _sym_decorrelation(w_init)
    r = w.shape[0]
    active = torch.arange(r)                    # restarts still iterating (on the CPU)
    iters, done, finite = [max_iter] * r, [False] * r, [True] * r
    for it in range(max_iter):
        rows = active.to(w.device)
        own = x.dim() == 3 and len(rows) < r    # the data of the restarts still iterating
        w1, ok, lim = _step(w[rows], x[rows] if own else x, fun, iter_dtype)
        w[rows] = w1
        finished, failed = torch.stack([(lim < tol) & ok, ~ok]).cpu()   # one sync
        for idx in active[finished].tolist():
            iters[idx], done[idx] = it + 1, True
        for idx in active[failed].tolist():
            iters[idx], finite[idx] = it + 1, False
        active = active[~(finished | failed)]
        if active.numel() == 0:
            break
    return w, iters, done, finite


def fastica(maps: torch.Tensor, n_init: int = 10, fun: str = "logcosh",
            max_iter: int = 200, tol: float = 1e-4, random_state=None,
            dtype: torch.dtype = torch.float64, iter_dtype: torch.dtype = torch.float32,
            restarts_per_batch: int | None = None, seeds=None,
            ) -> tuple[torch.Tensor, dict]:
    """Spatial symmetric FastICA of ``maps`` (components × voxels) with restarts.

    Parameters
    ----------
    maps : torch.Tensor of shape (k, n_voxels)
        Mixed maps (e.g. group PCA maps). Voxels are the samples.
    n_init : int
        Random initializations; the sparsest converged result is kept.
    fun : {"logcosh", "cube", "exp"}
        FastICA contrast function.
    max_iter, tol : int, float
        Stopping rule of scikit-learn's FastICA.
    random_state : None, int or numpy.random.RandomState
        Source of the restarts' seeds, drawn as nilearn's CanICA does
        (``random_state.randint(..., size=n_init)``); each seed gives one
        initial unmixing matrix.
    dtype : torch.dtype
        Precision of the whitening and of the final sources (float64 as nilearn).
    iter_dtype : torch.dtype
        Precision of the products with the data in the fixed-point iterations
        (float32 is about twice as fast); the k × k unmixing matrices are
        always updated and decorrelated in float64. A restart that still
        turns non-finite is run again entirely in float64.
    restarts_per_batch : int, optional
        How many restarts run together (batched matrix products); default: all
        that fit in about 1 GB.
    seeds : sequence of int, optional
        The ``n_init`` seeds of the restarts, drawn beforehand (see
        :func:`fastica_layers`); default: drawn from ``random_state``.

    Returns
    -------
    sources : torch.Tensor of shape (k, n_voxels)
        Unmixed maps with unit L2 norm, in ``maps``' dtype.
    info : dict
        ``seeds``, ``n_iter``, ``converged``, ``float64`` (restarts run again
        in float64), ``best`` (index of the kept restart), ``max_l1`` (per
        restart; inf for a restart that failed).

    Raises
    ------
    RuntimeError
        When every restart diverges (non-finite values), even in float64 and
        with a second set of seeds.
    """
    k, n_vox = maps.shape
    if k > n_vox:
        raise ValueError(f"FastICA needs at least as many voxels ({n_vox}) as components ({k}).")
    if n_init < 1:
        raise ValueError(f"n_init must be at least 1, got {n_init}.")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("The maps to unmix contain NaN or infinite values.")
    rng = check_random_state(random_state)
    device = maps.device
    xt, whitening, x1 = _whiten(maps, dtype)
    if restarts_per_batch is None:
        per_restart = 3 * k * n_vox * torch.finfo(iter_dtype).bits // 8
        restarts_per_batch = max(1, min(n_init, int(1e9 // max(per_restart, 1))))
    drawn, results_w, n_iters, converged, finite, in_float64 = [], [], [], [], [], []
    for attempt in range(2):
        # a second set of seeds only when every restart of the first diverged
        new_seeds = (_draw_seeds(rng, n_init) if attempt or seeds is None else
                     [int(s) for s in seeds])
        w_init = _initial_unmixing(new_seeds, k).to(device)
        for start in range(0, n_init, restarts_per_batch):
            batch = w_init[start:start + restarts_per_batch]
            w, iters, done, ok = _iterate(x1, batch, fun, max_iter, tol, iter_dtype)
            redo = [i for i, good in enumerate(ok) if not good]
            if redo and iter_dtype != torch.float64:
                w64, iters64, done64, ok64 = _iterate(x1, batch[redo], fun, max_iter, tol,
                                                      torch.float64)
                for j, i in enumerate(redo):
                    w[i], iters[i], done[i], ok[i] = w64[j], iters64[j], done64[j], ok64[j]
            results_w.append(w)
            n_iters.extend(iters)
            converged.extend(done)
            finite.extend(ok)
            in_float64.extend(i in redo for i in range(len(ok)))
        drawn.extend(new_seeds)
        if any(finite):
            break
    else:
        raise RuntimeError(
            f"FastICA diverged (non-finite unmixing matrices) in all {len(finite)} restarts, "
            f"even in float64 and with new seeds (fun={fun!r}, {k} components, {n_vox} voxels): "
            "use fun='logcosh', fewer components or more tokens.")
    sources, best, max_l1 = _sparsest(torch.cat(results_w), whitening, xt, finite, converged)
    info = {"seeds": drawn, "n_iter": n_iters, "converged": converged, "float64": in_float64,
            "best": best, "max_l1": max_l1}
    return sources.to(maps.dtype), info


def _draw_seeds(rng, n_init: int) -> list[int]:
    """The restarts' seeds, drawn as nilearn's CanICA does."""
    return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=n_init)]


def _initial_unmixing(seeds, k: int) -> torch.Tensor:
    """One random k × k starting matrix per seed (float64, on the CPU)."""
    return torch.stack([torch.randn(k, k, generator=torch.Generator().manual_seed(s),
                                    dtype=torch.float64) for s in seeds])


def _whiten(maps: torch.Tensor, dtype: torch.dtype):
    """Centred maps ``xt``, the whitening ``K`` and the whitened maps ``K xt * sqrt(voxels)``
    of maps (..., k, voxels) (scikit-learn's ``whiten="arbitrary-variance"``)."""
    xt = maps.to(dtype)
    xt = xt - xt.mean(dim=-1, keepdim=True)
    evals, u = torch.linalg.eigh(xt @ xt.transpose(-1, -2))
    evals, u = evals.flip(-1), u.flip(-1)
    if bool((evals[..., -1] <= 1e-10 * evals[..., 0]).any()):
        raise ValueError("The maps to unmix are linearly dependent: lower n_components.")
    whitening = (u / evals.sqrt().unsqueeze(-2)).transpose(-1, -2)      # (..., k, k)
    return xt, whitening, (whitening @ xt) * math.sqrt(maps.shape[-1])


def _sparsest(w_all: torch.Tensor, whitening: torch.Tensor, xt: torch.Tensor, finite,
              converged) -> tuple[torch.Tensor, int, list]:
    """The sources of the sparsest converged restart (the sparsest finite one when
    none converged), its index and every restart's largest L1 norm (inf if it failed)."""
    unmix = w_all @ whitening                                      # (R, k, k)
    max_l1 = torch.stack([(u_r @ xt).abs().sum(dim=1).amax() for u_r in unmix])
    ok = torch.tensor(finite, device=max_l1.device) & torch.isfinite(max_l1)
    max_l1 = torch.where(ok, max_l1, torch.inf)
    conv = ok & torch.tensor(converged, device=max_l1.device)
    best = int(torch.argmin(torch.where(conv, max_l1, torch.inf) if bool(conv.any()) else max_l1))
    return unmix[best] @ xt, best, max_l1.cpu().tolist()


def fastica_layers(maps: torch.Tensor, seeds, fun: str = "logcosh", max_iter: int = 200,
                   tol: float = 1e-4, random_state=None, dtype: torch.dtype = torch.float64,
                   iter_dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, dict]]:
    """:func:`fastica` of several independent sets of maps (e.g. one per layer).

    With one restart per set (the recipe's ``n_init=1``) the sets' fixed-point
    iterations run as one batch of matrix products (one symmetric
    decorrelation, one synchronisation per iteration for all), which spares the
    per-iteration overhead that dominates small unmixings (tens of components)
    on a CPU and the launches of small kernels on a GPU. With several restarts
    each set runs on its own, its restarts batched by :func:`fastica`, which
    drops each restart as it converges (in a batch of sets, a restart done in
    one set would still be computed while it runs in another).

    Parameters
    ----------
    maps : torch.Tensor of shape (n_sets, k, n_voxels)
    seeds : sequence of sequences of int
        Each set's restart seeds (``n_init`` of them, the same number for all).
    fun, max_iter, tol, dtype, iter_dtype
        As :func:`fastica`.
    random_state : None, int or numpy.random.RandomState
        Source of a second set of seeds for a set whose restarts all diverge.

    Returns
    -------
    list of (sources, info)
        For each set, what ``fastica(maps[i], n_init, ..., seeds=seeds[i])``
        returns. A set with a restart that turned non-finite is unmixed again
        by :func:`fastica` itself (its float64 reruns and second seeds).
    """
    n_sets, k, n_vox = maps.shape
    seeds = [[int(s) for s in row] for row in seeds]
    n_init = len(seeds[0])
    if len(seeds) != n_sets or any(len(row) != n_init for row in seeds):
        raise ValueError(f"Give {n_init} seeds for each of the {n_sets} sets of maps.")
    if k > n_vox:
        raise ValueError(f"FastICA needs at least as many voxels ({n_vox}) as components ({k}).")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("The maps to unmix contain NaN or infinite values.")
    if n_init > 1:
        return [fastica(one, n_init, fun, max_iter, tol, random_state, dtype, iter_dtype,
                        seeds=row) for one, row in zip(maps, seeds)]
    xt, whitening, x1 = _whiten(maps, dtype)
    # one restart per set: the sets are the restarts of one batch, each with its data
    w_init = torch.cat([_initial_unmixing(row, k) for row in seeds]).to(maps.device)
    step = max(1, int(1e9 // (3 * k * n_vox * torch.finfo(iter_dtype).bits // 8)))
    results = []
    for start in range(0, n_sets, step):
        part = slice(start, start + step)
        w, iters, done, finite = _iterate(x1[part], w_init[part], fun, max_iter, tol,
                                          iter_dtype)
        for j, index in enumerate(range(n_sets)[part]):
            if not finite[j]:
                results.append(fastica(maps[index], n_init, fun, max_iter, tol, random_state,
                                       dtype, iter_dtype, seeds=seeds[index]))
                continue
            sources, best, max_l1 = _sparsest(w[j:j + 1], whitening[index], xt[index],
                                              [True], [done[j]])
            results.append((sources.to(maps.dtype), {
                "seeds": seeds[index], "n_iter": [iters[j]], "converged": [done[j]],
                "float64": [False], "best": best, "max_l1": max_l1}))
    return results
