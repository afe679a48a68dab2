"""Streaming per-feature moments: mean, variance, mean |x| and sum of squares.

Samples arrive in chunks (tokens of a recording, batches of a forward pass);
each chunk's statistics are computed in float64 and merged into the running
ones with Chan, Golub and LeVeque's parallel update, so neither the chunk size
nor the number of chunks costs precision (no ``sum x**2 - n * mean**2``
cancellation). The accumulators stay on the device of the first chunk (CPU or
GPU).

>>> moments = RunningMoments(absolute=True)
>>> for chunk in torch.randn(100, 4).split(30):       # doctest: +SKIP
...     moments.update(chunk)
>>> moments.mean, moments.variance(), moments.mean_abs, moments.l2_norm  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RunningMoments"]


class RunningMoments:
    """Mean, variance (and optionally mean |x|) of streamed samples, per feature.

    Parameters
    ----------
    absolute : bool, default=False
        Also accumulate the sum of ``|x|`` (for :attr:`mean_abs`).

    Attributes
    ----------
    n : int
        Samples seen.
    mean : torch.Tensor, float64
        Per-feature mean; shape of a sample.
    m2 : torch.Tensor, float64
        Per-feature sum of squared deviations from the mean.

    Notes
    -----
    The first axis of every chunk is the sample axis; the remaining axes are
    features of any shape (``(neuron,)``, ``(layer, neuron)``, ...). A
    chunk's moments are computed in float64, a slice of at most 2**18 values
    at a time (so the working copy stays small whatever the chunk's size and
    dtype), then merged into the running ones.
    """

    _PIECE_ELEMENTS = 1 << 18     # float64 working copy of at most 2 MB

    def __init__(self, *, absolute: bool = False) -> None:
        self.absolute = absolute
        self.n = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None
        self._abs_sum: torch.Tensor | None = None

    def update(self, x) -> RunningMoments:
        """Add a chunk of samples.

        Parameters
        ----------
        x : torch.Tensor or numpy.ndarray of shape (n_samples, ...)
            Floating point values; a NumPy array is wrapped without a copy.

        Returns
        -------
        self
        """
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not x.is_floating_point():
            raise TypeError(f"RunningMoments needs floating point samples, got {x.dtype}.")
        n_b = int(x.shape[0])
        if n_b == 0:
            return self
        flat = x.reshape(n_b, -1)
        # float64 reductions, a few columns at a time: the float64 copy stays small
        step = max(1, self._PIECE_ELEMENTS // n_b)
        parts = []
        for start in range(0, flat.shape[1], step):
            piece = flat[:, start:start + step].to(torch.float64, copy=True)
            abs_sum = piece.abs().sum(dim=0) if self.absolute else None
            mean = piece.mean(dim=0)
            m2 = piece.sub_(mean).square_().sum(dim=0)     # two passes: no cancellation
            parts.append((mean, m2, abs_sum))
        mean_b, m2_b = (torch.cat([p[i] for p in parts]).reshape(x.shape[1:]) for i in (0, 1))
        abs_b = (torch.cat([p[2] for p in parts]).reshape(x.shape[1:]) if self.absolute
                 else None)
        self._merge(n_b, mean_b, m2_b, abs_b)
        return self

    def merge(self, other: RunningMoments) -> RunningMoments:
        """Add the samples accumulated by ``other`` (e.g. on another worker)."""
        if other.n == 0:
            return self
        if self.absolute and not other.absolute:
            raise ValueError("Cannot merge moments without |x| sums into moments that track them.")
        device = self.mean.device if self.mean is not None else other.mean.device
        abs_b = other._abs_sum.to(device) if self.absolute else None
        self._merge(other.n, other.mean.to(device), other.m2.to(device), abs_b)
        return self

    def _merge(self, n_b: int, mean_b, m2_b, abs_b) -> None:
        if self.mean is None:
            self.n, self.mean, self.m2, self._abs_sum = n_b, mean_b, m2_b, abs_b
            return
        if mean_b.shape != self.mean.shape:
            raise ValueError(f"Samples of shape {tuple(mean_b.shape)} cannot be added to moments "
                             f"of samples of shape {tuple(self.mean.shape)}.")
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta.square() * (self.n * n_b / n)
        if self.absolute:
            self._abs_sum = self._abs_sum + abs_b
        self.n = n

    def _check(self, need: int = 1) -> None:
        if self.n < need:
            raise ValueError(f"Need at least {need} sample(s) for these moments, got {self.n}.")

    def variance(self, ddof: int = 1) -> torch.Tensor:
        """Per-feature variance (``ddof=1``: unbiased)."""
        self._check(ddof + 1)
        return self.m2 / (self.n - ddof)

    def std(self, ddof: int = 1) -> torch.Tensor:
        """Per-feature standard deviation."""
        return self.variance(ddof).sqrt()

    @property
    def mean_abs(self) -> torch.Tensor:
        """Per-feature mean of ``|x|`` (needs ``absolute=True``)."""
        if not self.absolute:
            raise ValueError("mean_abs needs RunningMoments(absolute=True).")
        self._check()
        return self._abs_sum / self.n

    @property
    def sum_squares(self) -> torch.Tensor:
        """Per-feature ``sum x**2`` (as ``m2 + n * mean**2``: no cancellation)."""
        self._check()
        return self.m2 + self.n * self.mean.square()

    @property
    def l2_norm(self) -> torch.Tensor:
        """Per-feature ``sqrt(sum x**2)`` over the samples (Wanda's ``||X_j||``)."""
        return self.sum_squares.sqrt()
