"""The principal maps of one layer's z-scored voxels, from one pass over its tokens.

:class:`CorrelationSketch` receives blocks of tokens (tokens × voxels) as the
model produces them and keeps, per voxel, the mean and variance, and of the
voxels' correlation matrix ``R = D^-1 C D^-1`` (``C`` the centred Gram
matrix, ``D`` the standard deviations) either

* all of it (``size=None``: ``C`` itself, voxels × voxels), or
* a streaming Nyström sketch ``C Omega`` (voxels × ``size``) with a fixed
  random test matrix ``Omega`` (Tropp, Yurtsever, Udell and Cevher 2017,
  *Fixed-rank approximation of a positive-semidefinite matrix from streaming
  data*): two products per block, memory independent of the tokens.

The test matrix is, for each run of voxels (each hook point of a layer), a
Kronecker product ``A ⊗ B`` of two small Gaussian matrices where the sizes
factor (each factor compressing its side; otherwise a dense Gaussian matrix),
the factors' columns orthonormalised: a Kronecker-structured random
projection (Jin, Kolda and Ward 2019, *Faster Johnson-Lindenstrauss transforms
via Kronecker products*), whose product ``X Omega`` costs a tenth of a dense
one, leaving the product back ``X^T (X Omega)`` as the sketch's one large
cost. On SmolLM2's layers its principal maps are as close to the exact ones as
those of a dense Gaussian matrix of the same size (``benchmarks/bench_sketch.py``).

Both are sums over tokens: blocks can come in any order and size, and the
sketches of several processes add up (:meth:`CorrelationSketch.merge`,
:meth:`CorrelationSketch.all_reduce`).
Centring and scaling are exact, applied at the end: the products are taken on
the blocks shifted by the first block's mean (no cancellation) and corrected
with the exact per-voxel sums; since ``R (D Omega) = D^-1 C Omega``, the
Nyström approximation of ``R`` follows from ``C Omega`` without a second pass.

:meth:`~CorrelationSketch.principal_maps` returns the top ``k`` eigenvectors
of ``R``: the PCA maps of the z-scored tokens (the right singular vectors that
the offline fit computes from the data themselves).
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["CorrelationSketch"]


#: The test matrix is a Kronecker product only if each factor keeps at most this
#: share of its side (columns / rows) and has at least ``_MIN_FACTOR_COLUMNS``
#: columns (a product of smaller Gaussian factors is far from Gaussian); otherwise
#: (small sketches, a prime number of voxels) it is a dense Gaussian matrix.
_MAX_FACTOR_SHARE = 0.75
_MIN_FACTOR_COLUMNS = 8

#: The shift of the Nyström approximation, in units of the product type's machine
#: epsilon times the correlation matrix's mean gain on the test matrix (see
#: ``principal_maps``): chosen on the planted low-rank tokens of the tests, whose
#: noise lies at bfloat16's rounding level and whose maps it steadies across seeds,
#: and on SmolLM2's layers over the built-in corpus, whose principal maps it leaves
#: as close to the exact ones as without it (``benchmarks/bench_sketch.py``).
_SHIFT = 0.1

#: Orthonormalise the test matrix's Gaussian columns (the factors' or the dense
#: matrix's): the same range, hence the same Nyström approximation, without the
#: weak directions of a Kronecker product of Gaussian factors (its columns'
#: condition number is the product of the factors'), in which the rounding of
#: bfloat16 products is amplified. On SmolLM2 it changes nothing measurable
#: (``benchmarks/bench_sketch.py``: no design missed a map in 60 cases).
_ORTHONORMAL = True


def _gaussian(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Gaussian matrices (float64) with orthonormal columns (or of variance 1 / columns)."""
    values = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return torch.linalg.qr(values)[0] if _ORTHONORMAL else values / shape[-1] ** 0.5


def _factor_pairs(n: int) -> list[tuple[int, int]]:
    """``(a, b)`` with ``a * b == n``, both at least 2."""
    return [(n // b, b) for b in range(2, n // 2 + 1) if n % b == 0 and n // b >= 2]


def _kronecker_shape(width: int, size: int) -> tuple[int, int, int, int] | None:
    """``(rows_a, rows_b, cols_a, cols_b)`` of ``A ⊗ B`` (``rows_a * rows_b = width``,
    ``cols_a * cols_b = size``) whose factors compress their sides most evenly; None
    where no factor pair keeps at most ``_MAX_FACTOR_SHARE`` of both sides with
    ``_MIN_FACTOR_COLUMNS`` columns each."""
    best, best_key = None, None
    for rows_a, rows_b in _factor_pairs(width):
        for cols_a, cols_b in _factor_pairs(size):
            if min(cols_a, cols_b) < _MIN_FACTOR_COLUMNS:
                continue
            share = max(cols_a / rows_a, cols_b / rows_b)
            # the most even compression, then the squarest factors
            key = (share, round(abs(math.log(rows_a / rows_b)), 9), rows_a)
            if share <= _MAX_FACTOR_SHARE and (best_key is None or key < best_key):
                best, best_key = (rows_a, rows_b, cols_a, cols_b), key
    return best


class _TestMatrix:
    """The sketch's test matrix ``K`` (voxels × size): for each of ``groups`` runs
    of voxels, a Kronecker product ``A_g ⊗ B_g`` of Gaussian factors, stacked (or
    a dense Gaussian matrix), the factors' columns orthonormalised.

    Each run has factors of its own, so that the voxels at the same place of two
    runs (the up and act values of one neuron) have independent rows, as in a
    dense Gaussian matrix (a Kronecker product over all voxels did as well on
    SmolLM2, ``benchmarks/bench_sketch.py``). Drawn in float64 on the CPU from the
    seed, so every device and process has the same one; the copies on a device
    are shared by the sketches of the same shape and seed.
    """

    def __init__(self, n_voxels: int, size: int, seed: int, groups: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.n_voxels, self.size, self.seed = n_voxels, size, seed
        self.groups = groups if groups >= 1 and n_voxels % groups == 0 else 1
        self.width = n_voxels // self.groups
        self.shape = _kronecker_shape(self.width, size)
        if self.shape is None:
            self.dense = _gaussian(gen, n_voxels, size)
        else:
            rows_a, rows_b, cols_a, cols_b = self.shape
            self.left = _gaussian(gen, self.groups, rows_a, cols_a)
            self.right = _gaussian(gen, self.groups, rows_b, cols_b)
        self._copies: dict = {}

    def same_as(self, other: _TestMatrix) -> bool:
        return (self.n_voxels, self.size, self.seed, self.groups) == (
            other.n_voxels, other.size, other.seed, other.groups)

    @functools.cached_property
    def kernel(self) -> torch.Tensor:
        """``K`` (voxels × size, float64, CPU; built once): in run ``g``, voxel
        ``a * rows_b + b`` and column ``i * cols_b + j`` hold ``A_g[a, i] * B_g[b, j]``."""
        if self.shape is None:
            return self.dense
        return torch.cat([torch.kron(a, b) for a, b in zip(self.left, self.right)])

    def on(self, device: torch.device, dtype: torch.dtype) -> dict:
        """The factors (``dtype``) on ``device``; the dense kernel is added by
        :meth:`block_product` where a block needs it."""
        key = (device, dtype)
        if key not in self._copies:
            self._copies[key] = {} if self.shape is None else {
                "left_t": self.left.transpose(1, 2).to(device, dtype).contiguous(),
                "right": self.right.to(device, dtype)}
        return self._copies[key]

    def project(self, m: torch.Tensor) -> torch.Tensor:
        """``m K`` for ``m`` of shape (rows, voxels), in ``m``'s type and device."""
        runs = m.reshape(m.shape[0], self.groups, self.width).transpose(0, 1)
        return self.block_product(runs, m.device, m.dtype)

    def block_product(self, x: torch.Tensor, device: torch.device, dtype: torch.dtype
                      ) -> torch.Tensor:
        """``X K`` (tokens × size) of a block ``x`` (groups, tokens, width) in ``dtype``:
        through the factors where the block comes in the runs of the test matrix, by
        a dense product otherwise."""
        groups, n_b, width = x.shape
        factors = self.on(device, dtype)
        if self.shape is None or (groups, width) != (self.groups, self.width):
            kernel = factors.get("dense")
            if kernel is None:
                kernel = factors["dense"] = self.kernel.to(device, dtype)
            kernel = kernel.view(groups, width, self.size)
            out = torch.mm(x[0], kernel[0])
            for g in range(1, groups):
                out.addmm_(x[g], kernel[g])
            return out
        rows_a, rows_b, cols_a, cols_b = self.shape
        out = torch.empty(n_b * cols_a, cols_b, dtype=dtype, device=device)
        for g in range(groups):                     # (A_g^T X_g) B_g, per token
            z = torch.matmul(factors["left_t"][g], x[g].reshape(n_b, rows_a, rows_b))
            z = z.view(n_b * cols_a, rows_b)
            if g:
                out.addmm_(z, factors["right"][g])
            else:
                torch.mm(z, factors["right"][g], out=out)
        return out.view(n_b, self.size)


@functools.lru_cache(maxsize=8)
def _test_matrix(n_voxels: int, size: int, seed: int, groups: int) -> _TestMatrix:
    return _TestMatrix(n_voxels, size, seed, groups)


class CorrelationSketch:
    """Per-voxel moments and the correlation structure of streamed tokens.

    Parameters
    ----------
    n_voxels : int
    size : int or None
        Columns of the Nyström sketch; None (or at least ``n_voxels // 2``,
        where the exact matrix is as cheap) keeps the exact centred Gram matrix.
    device : torch.device
        Where the sums live (the device of the layer's activations).
    seed : int
        Seed of the test matrix (drawn on the CPU, so every device and
        process draws the same one; sketches of the same seed share it).
    groups : int, default=1
        How the blocks will give the voxels: in ``groups`` consecutive runs of
        equal width (e.g. the hook points of a layer, see :meth:`update`). The
        Kronecker factors of the test matrix are chosen to fit the runs, so
        that its product with a block takes no copy; blocks of another layout
        are still taken, at the cost of a dense product.
    product_dtype : torch.dtype, optional
        Type of the products with the blocks (their accumulation is always in
        float32, the per-voxel sums in float64). Default: bfloat16 for a
        sketch (the test matrix is random anyway, and bfloat16 products are
        several times faster on recent CPUs and GPUs), float32 for the exact
        matrix.
    workspaces : dict, optional
        Where the block buffers are kept, shared with other sketches (those of
        an estimator: fresh tensors of a block's size cost more to allocate
        than to fill, and one buffer reused layer after layer stays in the
        caches). Clearing it frees them. Default: the sketch's own.
    """

    def __init__(self, n_voxels: int, size: int | None, *, device, seed: int = 0,
                 groups: int = 1, product_dtype: torch.dtype | None = None,
                 workspaces: dict | None = None) -> None:
        self.n_voxels = int(n_voxels)
        self.exact = size is None or 2 * int(size) >= self.n_voxels
        self.size = self.n_voxels if self.exact else int(size)
        self.device = torch.device(device)
        self.product_dtype = product_dtype or (torch.float32 if self.exact else torch.bfloat16)
        self.n = 0
        self.workspaces = {} if workspaces is None else workspaces
        self.shift: torch.Tensor | None = None
        # sums added to in place, inside the recorder's inference mode and outside it
        with torch.inference_mode(False):
            self.sum = torch.zeros(self.n_voxels, dtype=torch.float64, device=self.device)
            self.sum_sq = torch.zeros_like(self.sum)
            # stored transposed, (size, voxels): the product with a block is then
            # (X Omega)^T X, whose layout the matrix product writes fastest
            self._products_t = torch.zeros(self.size, self.n_voxels, dtype=torch.float32,
                                           device=self.device)
        if self.exact:
            self._test = None
        else:
            self._test = _test_matrix(self.n_voxels, self.size, int(seed), int(groups))

    @property
    def omega(self) -> torch.Tensor | None:
        """The test matrix (voxels × size, float64, on the CPU); None for the exact matrix."""
        return None if self.exact else self._test.kernel

    def update(self, block: torch.Tensor) -> CorrelationSketch:
        """Add a block of tokens.

        Parameters
        ----------
        block : torch.Tensor of shape (tokens, voxels) or (groups, tokens, width)
            Any floating type. The 3-D form gives the voxels in ``groups``
            consecutive runs of ``width`` (e.g. the hook points of a layer,
            as the recorder hands them): it is read as it is, without the
            copy that joining them into (tokens, voxels) would take.
        """
        x = block if block.dim() == 3 else block.unsqueeze(0)
        if x.dim() != 3 or x.shape[0] * x.shape[2] != self.n_voxels:
            raise ValueError(f"A block of {self.n_voxels} voxels is (tokens, {self.n_voxels}) "
                             f"or (groups, tokens, width), got {tuple(block.shape)}.")
        groups, n_b, width = x.shape
        if n_b == 0:
            return self
        x = x.to(self.device)
        if self.shift is None:
            self.shift = x.float().mean(dim=1).reshape(-1)
        shifted, xp = self._workspace(groups, n_b, width)
        torch.sub(x, self.shift.view(groups, 1, width), out=shifted)
        xp.copy_(shifted)
        self.n += n_b
        # per block in float32 (shifted values: small and centred), accumulated in float64
        self.sum += torch.matmul(shifted.new_ones(n_b), shifted).reshape(-1).double()
        self.sum_sq += shifted.square_().sum(dim=1).reshape(-1).double()
        if self.exact:
            flat = xp.transpose(0, 1).reshape(n_b, -1)
            self._products_t.addmm_(flat.T, flat)                  # symmetric
            return self
        projected = self._test.block_product(xp, self.device, self.product_dtype)
        back = torch.matmul(projected.T.contiguous(), xp)      # (X Omega)^T X, per group
        self._products_t.view(self.size, groups, width).add_(back.transpose(0, 1))
        return self

    def _workspace(self, groups: int, n_b: int, width: int):
        """Buffers of a block (float32 and product type), see ``workspaces``."""
        key = (self.device, self.product_dtype, groups, width)
        buffers = self.workspaces.get(key)
        if buffers is None or buffers[0].shape[1] < n_b:
            self.workspaces.pop(key, None)            # the old ones go first
            with torch.inference_mode(False):         # as the sums
                buffers = self.workspaces[key] = (
                    torch.empty(groups, n_b, width, device=self.device),
                    torch.empty(groups, n_b, width, dtype=self.product_dtype,
                                device=self.device))
        return tuple(buffer[:, :n_b] for buffer in buffers)

    def _project(self, m: torch.Tensor) -> torch.Tensor:
        """``m Omega`` (the exact matrix: ``m``)."""
        return m if self.exact else self._test.project(m)

    # ------------------------------------------------------------------ results
    def _check(self) -> None:
        if self.n < 2:
            raise ValueError(f"Need at least 2 tokens for the correlations, got {self.n}.")

    @property
    def mean(self) -> torch.Tensor:
        """Per-voxel mean (float64)."""
        self._check()
        return self.shift.double() + self.sum / self.n

    def std(self) -> torch.Tensor:
        """Per-voxel standard deviation (``ddof=1``, float64)."""
        self._check()
        centred = self.sum / self.n
        return ((self.sum_sq - self.n * centred.square()).clamp_min(0) / (self.n - 1)).sqrt()

    def centred_products(self) -> torch.Tensor:
        """``C`` (exact) or ``C Omega`` (sketch), float64, with ``C`` the centred Gram."""
        self._check()
        centred = self.sum / self.n
        return self._products_t.T.double() - self.n * torch.outer(
            centred, self._project(centred[None])[0])

    def reshift(self, shift: torch.Tensor) -> CorrelationSketch:
        """Express the sums about another shift (in place; the statistics are unchanged)."""
        shift = shift.to(self.device, torch.float32)
        if self.n:
            # x - new = (x - old) + delta
            delta = (self.shift - shift).double()
            s = self.sum
            right_s, right_d = self._project(torch.stack([s, delta]))
            self._products_t = (self._products_t.double() + torch.outer(right_s, delta)
                                + torch.outer(right_d, s) + self.n * torch.outer(right_d, delta)
                                ).float()
            self.sum_sq = self.sum_sq + 2 * delta * s + self.n * delta.square()
            self.sum = s + self.n * delta
        self.shift = shift
        return self

    def merge(self, other: CorrelationSketch) -> CorrelationSketch:
        """Add the tokens of ``other`` (same voxels, size and seed; e.g. from another
        process). ``other`` is modified."""
        if (other.n_voxels, other.size, other.exact) != (self.n_voxels, self.size, self.exact) \
                or (not self.exact and not self._test.same_as(other._test)):
            raise ValueError("Only sketches of the same voxels, size and seed can be merged.")
        if other.n == 0:
            return self
        if self.n == 0:
            self.shift = other.shift.to(self.device)
        other.reshift(self.shift)
        self.n += other.n
        self.sum += other.sum.to(self.device)
        self.sum_sq += other.sum_sq.to(self.device)
        self._products_t += other._products_t.to(self.device)
        return self

    def all_reduce(self) -> CorrelationSketch:
        """Add the tokens of the same sketch in every process of the group (in place;
        nothing happens outside a process group)."""
        from ..distributed import all_reduce, is_distributed

        if not is_distributed():
            return self
        mine = self.shift if self.n else torch.zeros(self.n_voxels, device=self.device)
        total = all_reduce({"shift": mine.double(), "count": torch.tensor(
            float(self.n > 0), dtype=torch.float64, device=self.device)})
        if float(total["count"]) == 0:
            return self
        self.reshift((total["shift"] / total["count"]).float())
        sums = all_reduce({"n": torch.tensor(float(self.n), dtype=torch.float64,
                                             device=self.device),
                           "sum": self.sum, "sum_sq": self.sum_sq,
                           "products_t": self._products_t})
        self.n = round(float(sums["n"]))
        self.sum, self.sum_sq, self._products_t = sums["sum"], sums["sum_sq"], sums["products_t"]
        return self

    def principal_maps(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The top ``k`` eigenvectors of the voxels' correlation matrix.

        Returns
        -------
        maps : torch.Tensor of shape (k, n_voxels), float32
            Orthonormal rows, by decreasing eigenvalue.
        eigenvalues : torch.Tensor of shape (k,), float64
            The (approximate) eigenvalues, in units of tokens.
        """
        if self.n <= k:
            raise ValueError(f"{k} principal maps need at least {k + 1} tokens (n - 1 centred "
                             f"directions), got {self.n}: give more tokens or fewer components.")
        std = self.std()
        varying = std > 0
        inv = torch.where(varying, 1 / torch.where(varying, std, 1), 0)   # constant voxels: 0
        products = self.centred_products()
        if self.exact:
            evals, evecs = torch.linalg.eigh(inv[:, None] * products * inv[None, :])
            order = torch.argsort(evals, descending=True)[:k]
            return evecs[:, order].T.float().contiguous(), evals[order]
        # Nyström of R with the test matrix W = D Omega: R W = D^-1 C Omega = Y and
        # W^T R W = Omega^T C Omega. As in Tropp et al. (2017,
        # algorithm 3), it is taken of R + nu I, nu near the rounding level of the
        # block products, and nu taken off the eigenvalues: directions below the
        # rounding level are not amplified by the pseudo-inverse.
        y = inv[:, None] * products
        test = std[:, None] * self._test.kernel.to(y)
        nu = _SHIFT * torch.finfo(self.product_dtype).eps * float(
            torch.linalg.norm(y) / torch.linalg.norm(test).clamp_min(1e-300))
        y = y + nu * test
        core = self._project((products + nu * std[:, None] * test).T)      # W^T (R + nu) W
        evals, evecs = torch.linalg.eigh((core + core.T) / 2)
        keep = evals > evals.amax().clamp_min(0) * 1e-12
        # the approximation is F F^T with F = Y M (voxels × size, M = V Λ^-1/2): its top
        # eigenvectors are F's top left singular vectors, F W_k / s_k, W Σ² W^T being the
        # eigendecomposition of F^T F = M^T (Y^T Y) M (size × size; no thin SVD of F)
        m = evecs[:, keep] / evals[keep].sqrt()
        gram = m.T @ (y.T @ y) @ m
        squares, w = torch.linalg.eigh((gram + gram.T) / 2)
        squares, w = squares.flip(0), w.flip(1)
        evals = squares - nu
        above = int((evals > nu).sum())
        if above < k:
            raise ValueError(f"The tokens span only {above} directions of the sketch above the "
                             f"rounding of its products, fewer than {k} components: give more "
                             "tokens or fewer components.")
        maps = y @ (m @ (w[:, :k] / squares[:k].sqrt()))
        return maps.T.float().contiguous(), evals[:k]
