import numpy as np

from pqflow.ir import Fixed, Overflow, Rounding, dequantize, quantize_float
from pqflow.models import load_digits_split


def test_split_sizes_and_stratification(digits):
    assert digits.x_train.shape == (1437, 64)
    assert digits.x_test.shape == (360, 64)
    assert digits.x_train.dtype == np.float32
    assert digits.y_test.dtype == np.int64
    assert digits.n_classes == 10
    counts = np.bincount(digits.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class


def test_split_is_fixed(digits):
    again = load_digits_split()
    assert np.array_equal(again.x_test, digits.x_test)
    assert np.array_equal(again.y_train, digits.y_train)


def test_inputs_are_sixteenths_and_quantize_exactly(digits):
    x = np.concatenate([digits.x_train, digits.x_test]).astype(np.float64)
    assert x.min() == 0.0 and x.max() == 1.0
    assert np.array_equal(x * 16, np.rint(x * 16))
    for frac in (4, 7):
        fmt = Fixed(8, frac, False)
        raw = quantize_float(x, fmt, Rounding.HALF_EVEN, Overflow.SATURATE)
        assert np.array_equal(dequantize(raw, fmt), x)


def test_image_layout_is_the_flat_layout_reshaped(digits):
    img = load_digits_split(image=True)
    assert img.x_train.shape == (1437, 8, 8, 1)
    assert np.array_equal(img.x_test.reshape(360, 64), digits.x_test)
