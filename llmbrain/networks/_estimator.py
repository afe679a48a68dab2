"""What the network estimators share: the data they take and the checks of their parameters."""

from __future__ import annotations

import numbers

__all__ = ["ActivationsEstimatorMixin", "check_positive_int"]


class ActivationsEstimatorMixin:
    """scikit-learn tags of an estimator of ``(token, [hook,] layer, neuron)`` activations
    (not 2-D arrays), fitted once the attribute named by ``_fitted_attribute`` exists."""

    _fitted_attribute: str

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, self._fitted_attribute)


def check_positive_int(name: str, value, *, optional: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a positive integer (or None
    when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if optional else ''}, "
                         f"got {value!r}.")
