"""Every op's Numba kernel equals the numpy reference, bit for bit, on random cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import OP_CASES, op_cases

from pqflow.ir import OPS, Float
from pqflow.kernels import Options, evaluate, kernel
from pqflow.kernels.numba_ops import F32_LIMIT, F64_LIMIT, kernel_alloc, matmul_plan
from pqflow.kernels.reference import evaluate as reference_evaluate


def test_every_op_has_a_kernel_a_reference_and_a_strategy():
    missing = []
    for name, cls in OPS.items():
        if kernel.dispatch(cls) is kernel.dispatch(object):
            missing.append(f"{name}: no Numba kernel")
        if evaluate.dispatch(cls) is evaluate.dispatch(object):
            missing.append(f"{name}: no numpy reference")
        if name not in OP_CASES:
            missing.append(f"{name}: no hypothesis strategy")
    assert not missing, "; ".join(missing)
    assert reference_evaluate is evaluate


def test_unknown_op_raises_clearly():
    class Mystery:
        pass

    with pytest.raises(NotImplementedError, match="no Numba kernel for op Mystery"):
        kernel(Mystery(), [], options=Options(), out=None)
    with pytest.raises(NotImplementedError, match="no definition for op Mystery"):
        evaluate(Mystery(), [])


def _check(case, gemm="auto"):
    want = evaluate(case.op, case.in_types, *case.inputs)
    got = kernel_alloc(case.op, case.in_types, case.out_type, *case.inputs, options=Options(gemm))
    assert got.shape == want.shape
    if isinstance(case.out_type.dtype, Float):
        assert got.dtype == np.float64
    else:
        assert got.dtype == np.int64
        lo, hi = case.out_type.dtype.min_raw, case.out_type.dtype.max_raw
        assert want.size == 0 or (want.min() >= lo and want.max() <= hi), "reference out of range"
    assert np.array_equal(got, want, equal_nan=isinstance(case.out_type.dtype, Float))


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("kind", sorted(OPS))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kernel_equals_reference(kind, data):
    _check(data.draw(op_cases(kind)))


LIMITS = {"f32": F32_LIMIT, "f64": F64_LIMIT}
MATMULS = ["Dense", "Conv2d", "BinaryDense", "BinaryConv2d"]


@pytest.mark.parametrize("kind", MATMULS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_exact_accumulator_path_agrees(kind, data):
    """Forcing f32, f64 or int on the same inputs gives identical ints wherever exact."""
    case = data.draw(op_cases(kind))
    bound = matmul_plan(case.op, case.in_types[0]).bound
    paths = [p for p in ("f32", "f64", "int") if p == "int" or bound < LIMITS[p]]
    for p in paths:
        _check(case, gemm=p)
    for p in ("f32", "f64"):
        if p not in paths:
            with pytest.raises(ValueError, match=f"gemm='{p}' is not exact here"):
                _check(case, gemm=p)


def test_the_three_paths_are_all_reached():
    """The strategies hit every path under "auto" (so the agreement test is not vacuous)."""
    seen = set()

    @settings(max_examples=300, deadline=None, database=None)
    @given(case=op_cases("Dense"))
    def collect(case):
        seen.add(matmul_plan(case.op, case.in_types[0]).path)

    collect()
    assert seen == {"f32", "f64", "int"}


def test_channel_gate_keeps_the_top_k_with_ties_to_the_lower_index():
    from pqflow.ir import ChannelGate, Fixed, TensorType

    s = np.array([[3, 5, 5, 1, 5], [0, 0, 0, 0, 0], [-2, 7, -1, 7, 0]])
    x = np.arange(1, 3 * 2 * 5 + 1).reshape(3, 1, 2, 5)
    types = [TensorType(Fixed(8, 0, True), (1, 2, 5)), TensorType(Fixed(4, 1, True), (5,))]
    keep = np.array([[0, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 1, 0, 1, 0]], bool)
    for scale in (True, False):
        op = ChannelGate(2, scale)
        want = np.where(keep[:, None, None, :], x * (s[:, None, None, :] if scale else 1), 0)
        out_t = op.infer(*types)  # products in [-1016, 1024]: 12 bits
        assert out_t.dtype == (Fixed(12, 1, True) if scale else types[0].dtype)
        assert np.array_equal(evaluate(op, types, x, s), want)
        assert np.array_equal(kernel_alloc(op, types, out_t, x, s, options=Options()), want)
