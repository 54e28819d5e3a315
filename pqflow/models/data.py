"""Datasets: scikit-learn's handwritten digits, offline, with one fixed split.

The digits set has 1,797 8x8 gray-scale images whose pixels are integers 0..16.

Split (fixed, never reshuffled): ``train_test_split(stratify=y, test_size=0.2,
random_state=0)`` -> 1,437 training images and 360 test images.

Scaling: ``x = pixel / 16``, so every input is one of the 17 values k/16 in [0, 1]
(1.0 included). Each is exactly representable in ``Fixed(8, frac, signed=False)`` for
any ``4 <= frac <= 7`` (raw = k * 2^(frac-4) <= 255), so the 8-bit input quantizer of
a quantized model is exact: no information is lost between the float data and the
integer graph. Min-max calibration over this data gives max = 1.0 and ``frac = 7``
(raw = 8k).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "load_digits_split", "DIGITS_TEST_SIZE", "DIGITS_RANDOM_STATE"]

DIGITS_TEST_SIZE = 0.2
DIGITS_RANDOM_STATE = 0
DIGITS_PIXEL_MAX = 16


@dataclass(frozen=True)
class Split:
    """A train/test split: ``x`` float32, ``y`` int64 class labels 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load_digits_split(image: bool = False) -> Split:
    """The digits split described in this module's docstring.

    ``image=False`` gives x of shape (N, 64) (row-major flattened 8x8 image);
    ``image=True`` gives (N, 8, 8, 1), channels-last, the layout of the IR's Conv2d.
    The flat form is exactly the image form reshaped.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data.astype(np.float64) / DIGITS_PIXEL_MAX).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_RANDOM_STATE, stratify=y
    )
    if image:
        x_train = x_train.reshape(-1, 8, 8, 1)
        x_test = x_test.reshape(-1, 8, 8, 1)
    return Split(
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(x_test),
        np.ascontiguousarray(y_test),
    )
