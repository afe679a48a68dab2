"""The principal maps of one layer's z-scored voxels, from one pass over its tokens.

:class:`CorrelationSketch` receives blocks of tokens (tokens × voxels) as the
model produces them and keeps, per voxel, the mean and variance, and of the
voxels' correlation matrix ``R = D^-1 C D^-1`` (``C`` the centred Gram
matrix, ``D`` the standard deviations) either

* all of it (``size=None``: ``C`` itself, voxels × voxels), or
* a streaming Nyström sketch ``C Omega`` (voxels × ``size``) with a fixed
  Gaussian test matrix ``Omega`` (Tropp, Yurtsever, Udell and Cevher 2017,
  *Fixed-rank approximation of a positive-semidefinite matrix from streaming
  data*): one product per block, memory independent of the tokens.

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

import torch

__all__ = ["CorrelationSketch"]


#: Block buffers of each (device, product type, groups, width), see ``_workspace``.
_WORKSPACES: dict = {}


@functools.lru_cache(maxsize=4)
def _test_matrix(n_voxels: int, size: int, seed: int) -> torch.Tensor:
    """A Gaussian test matrix (float64, on the CPU: the same on every device and process)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n_voxels, size, generator=gen, dtype=torch.float64) / size ** 0.5


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
    product_dtype : torch.dtype, optional
        Type of the products with the blocks (their accumulation is always in
        float32, the per-voxel sums in float64). Default: bfloat16 for a
        sketch (the test matrix is random anyway, and bfloat16 products are
        several times faster on recent CPUs and GPUs), float32 for the exact
        matrix.
    """

    def __init__(self, n_voxels: int, size: int | None, *, device, seed: int = 0,
                 product_dtype: torch.dtype | None = None) -> None:
        self.n_voxels = int(n_voxels)
        self.exact = size is None or 2 * int(size) >= self.n_voxels
        self.size = self.n_voxels if self.exact else int(size)
        self.device = torch.device(device)
        self.product_dtype = product_dtype or (torch.float32 if self.exact else torch.bfloat16)
        self.n = 0
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(self.n_voxels, dtype=torch.float64, device=self.device)
        self.sum_sq = torch.zeros_like(self.sum)
        # stored transposed, (size, voxels): the product with a block is then
        # (C Omega)^T = Omega^T X^T X, whose layout the matrix product writes fastest
        self._products_t = torch.zeros(self.size, self.n_voxels, dtype=torch.float32,
                                       device=self.device)
        if self.exact:
            self.omega = None
        else:
            self.omega = _test_matrix(self.n_voxels, self.size, int(seed)).to(self.device)
            self._omega_product = self.omega.to(self.product_dtype)

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
        self.sum += shifted.sum(dim=1).reshape(-1).double()
        self.sum_sq += shifted.square_().sum(dim=1).reshape(-1).double()
        if self.exact:
            flat = xp.transpose(0, 1).reshape(n_b, -1)
            self._products_t.addmm_(flat.T, flat)                  # symmetric
            return self
        omega = self._omega_product.view(groups, width, self.size)
        projected = torch.mm(xp[0], omega[0])                               # X Omega
        for g in range(1, groups):
            projected.addmm_(xp[g], omega[g])
        back = torch.matmul(projected.T.contiguous(), xp)      # (X Omega)^T X, per group
        self._products_t.view(self.size, groups, width).add_(back.transpose(0, 1))
        return self

    @property
    def products(self) -> torch.Tensor:
        """The uncentred sums: ``X^T X`` (exact) or ``X^T X Omega`` (sketch), float32,
        of the shifted tokens ``X`` (voxels × size)."""
        return self._products_t.T

    @products.setter
    def products(self, value: torch.Tensor) -> None:
        self._products_t = value.T.to(torch.float32).contiguous()

    def _workspace(self, groups: int, n_b: int, width: int):
        """Buffers of a block (float32 and product type), shared by the sketches of a
        device: fresh tensors of this size cost more to allocate than to fill, and one
        buffer reused layer after layer stays in the caches."""
        key = (self.device, self.product_dtype, groups, width)
        buffers = _WORKSPACES.get(key)
        if buffers is None or buffers[0].shape[1] < n_b:
            buffers = _WORKSPACES[key] = (
                torch.empty(groups, n_b, width, device=self.device),
                torch.empty(groups, n_b, width, dtype=self.product_dtype, device=self.device))
        return tuple(buffer[:, :n_b] for buffer in buffers)

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
        products = self.products.double()
        right = centred if self.exact else centred @ self.omega
        return products - self.n * torch.outer(centred, right)

    def reshift(self, shift: torch.Tensor) -> CorrelationSketch:
        """Express the sums about another shift (in place; the statistics are unchanged)."""
        shift = shift.to(self.device, torch.float32)
        if self.n:
            # x - new = (x - old) + delta
            delta = (self.shift - shift).double()
            s = self.sum
            right_s, right_d = (s, delta) if self.exact else (s @ self.omega, delta @ self.omega)
            self.products = (self.products.double() + torch.outer(delta, right_s)
                             + torch.outer(s, right_d) + self.n * torch.outer(delta, right_d)
                             ).float()
            self.sum_sq = self.sum_sq + 2 * delta * s + self.n * delta.square()
            self.sum = s + self.n * delta
        self.shift = shift
        return self

    def merge(self, other: CorrelationSketch) -> CorrelationSketch:
        """Add the tokens of ``other`` (same voxels, size and seed; e.g. from another
        process). ``other`` is modified."""
        if (other.n_voxels, other.size, other.exact) != (self.n_voxels, self.size, self.exact) \
                or (not self.exact and not torch.equal(other.omega.cpu(), self.omega.cpu())):
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
        std = self.std()
        varying = std > 0
        inv = torch.where(varying, 1 / torch.where(varying, std, 1), 0)   # constant voxels: 0
        products = self.centred_products()
        if self.exact:
            evals, evecs = torch.linalg.eigh(inv[:, None] * products * inv[None, :])
            order = torch.argsort(evals, descending=True)[:k]
            return evecs[:, order].T.float().contiguous(), evals[order]
        # Nyström: R ~ Y B^+ Y^T with Y = D^-1 C Omega and B = Omega^T C Omega
        y = inv[:, None] * products
        core = self.omega.T @ products
        core = (core + core.T) / 2
        evals, evecs = torch.linalg.eigh(core)
        keep = evals > evals.amax().clamp_min(0) * 1e-10
        if int(keep.sum()) < k:
            raise ValueError(f"The tokens span only {int(keep.sum())} directions of the sketch, "
                             f"fewer than {k} components: give more tokens or fewer components.")
        factor = y @ (evecs[:, keep] / evals[keep].sqrt())
        u, s, _ = torch.linalg.svd(factor, full_matrices=False)
        return u[:, :k].T.float().contiguous(), s[:k].square()
