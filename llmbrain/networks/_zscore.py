"""Standardizing activations: each neuron z-scored over tokens.

Streaming means and variances over many blocks live in :mod:`llmbrain._moments`.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["check_finite", "zscore_tokens"]


def check_finite(x: torch.Tensor, what: str = "activations") -> None:
    """Raise a clear error when ``x`` holds NaN or infinite values."""
    # NaN and inf propagate through a column sum: a cheap test first
    if bool(torch.isfinite(x.sum(dim=0)).all()):
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise ValueError(
            f"The {what} contain {n_bad} NaN or infinite values. Record them again "
            "(float16 stores overflow above 65504: record in float32 or exclude the "
            "offending layers) or drop the affected tokens before fitting.")


def zscore_tokens(x: torch.Tensor, eps: float = 1e-12, warn: bool = True,
                  what: str = "activations") -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score each column (neuron) of ``x`` (tokens × neurons) over its rows, in place.

    Parameters
    ----------
    x : torch.Tensor of shape (n_tokens, n_neurons), floating point
        Modified in place.
    eps : float
        Neurons whose standard deviation is at most ``eps`` are constant:
        they are set to zero (and a warning names how many there are).
    warn : bool
        Whether to warn about constant neurons.
    what : str
        Name of the data in messages.

    Returns
    -------
    x : torch.Tensor
        The standardized data (same object).
    constant : torch.Tensor of bool, shape (n_neurons,)
        Which neurons were constant.
    """
    check_finite(x, what)
    if x.shape[0] < 2:
        raise ValueError(f"Cannot z-score {what} over {x.shape[0]} token(s): give at "
                         "least 2 tokens per group (use fewer groups or more tokens).")
    mean = x.mean(dim=0)
    x.sub_(mean)
    std = torch.linalg.vector_norm(x, dim=0) / (x.shape[0] - 1) ** 0.5
    constant = std <= eps
    if warn and bool(constant.any()):
        warnings.warn(
            f"{int(constant.sum())} of {x.shape[1]} neurons are constant over the "
            f"{x.shape[0]} tokens of a group of {what}; they are set to zero and can "
            "belong to no network. Use more (or more varied) tokens to avoid this.",
            UserWarning, stacklevel=3)
    std = torch.where(constant, torch.ones_like(std), std)
    x.div_(std)
    x[:, constant] = 0
    return x, constant
