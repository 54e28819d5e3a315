"""QONNX -> IR: ``from_qonnx(path_or_model)`` turns an ONNX/QONNX file into a pqflow ``Graph``.

Semantics: every ONNX tensor holds a float value; every IR value is an integer raw with a
type. The importer tracks, for each ONNX activation, the IR value holding it and a float
*residual scale* r (per channel or scalar) such that

    onnx value = raw * 2**-frac * r.

Power-of-two scales end up in ``frac`` (r = 1); other scales stay in r until a ``Quant``
turns them into a ``Requant`` multiplier. Constants (weights, biases, thresholds) are
evaluated with qonnx's own executor (``execute_node``) and turned into integer raws.

Supported ONNX ops (``SUPPORTED``) and how they map:

- ``Quant`` (IntQuant; scale, zero_point, bitwidth, signed, narrow, rounding_mode):
  on a constant -> integer weights (scale per tensor or per output channel);
  on the float graph input -> ``Quantize`` (power-of-two scale, zero point 0);
  on an activation -> ``Requant`` with mult/shift = the exact dyadic value of
  r * 2**-frac / scale when it fits 62 bits (always, for power-of-two scales), else the
  nearest mult/shift with as many bits as the verifier allows. Narrow ranges and other
  clip ranges that are not a whole ``Fixed`` range add a ``MultiThreshold`` clip.
  1-bit signed Quant is bipolar (as in qonnx).
- ``BipolarQuant`` -> Bipolar weights, or ``MultiThreshold`` (x >= 0) to a Bipolar value.
- ``Trunc`` (v1: 5 inputs, v2: 6 inputs) -> ``Requant`` (a right shift with its rounding).
- ``MultiThreshold`` (qonnx) -> ``MultiThreshold`` with thresholds ceil(T / scale).
- ``Gemm`` (alpha = beta = 1, transA = 0), ``MatMul`` with a constant right operand, and a
  following ``Add`` of a constant (the bias) -> ``Dense`` (``BinaryDense`` for Bipolar x
  Bipolar). ``Conv`` (dilations 1) -> ``Conv2d`` / ``BinaryConv2d``.
- ``Add`` of two activations with equal residual scales -> ``Add``.
- ``Mul`` / ``Div`` by a positive constant (scalar or per channel) -> folded into r.
- ``Relu``, ``MaxPool`` (no padding), ``Flatten`` (axis 1), ``Reshape`` to (N, -1),
  ``AveragePool`` (power-of-two windows, no padding), ``Transpose`` NCHW <-> NHWC,
  ``Identity``.

Layout: images are NCHW in ONNX and channels-last in the IR, so the IR graph takes an
(N, H, W, C) input where the ONNX model takes (N, C, H, W) and gives image outputs
channels-last. A flatten of an NCHW tensor is C-major in ONNX and HWC-major in the IR:
the weights of the ``Dense`` reading it are permuted to match.

Exactness: for power-of-two scales (and biases on the accumulator grid) the IR computes
exactly the real-number value of the QONNX graph; qonnx's executor computes in float32,
which is exact while every accumulator stays below 2**24 units of its scale (true for
8-bit digits MLPs). With other scales, qonnx divides floats (float32 rounding) and the IR
multiplies integers (mult/shift): results differ only where a value lands within about
2**-24 (relative) of a rounding boundary, or, when mult/shift had to be rounded, within
|x| * 2**-(mult bits) of it. Rounding modes: ROUND/HALF_EVEN -> half_even, FLOOR ->
floor, HALF_UP (away from zero) -> half_up where the result is unsigned; any mode where no
precision is dropped; others raise ``QONNXImportError``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pqflow.errors import UserError
from pqflow.ir import (
    Add,
    AvgPool2d,
    BinaryConv2d,
    BinaryDense,
    Bipolar,
    Conv2d,
    Dense,
    Dequantize,
    Fixed,
    Flatten,
    Float,
    Graph,
    GraphBuilder,
    IRError,
    MaxPool2d,
    MultiThreshold,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    Rounding,
    Weight,
)
from pqflow.ir.types import MAX_WIDTH

__all__ = ["SUPPORTED", "QONNXImportError", "UnsupportedONNXOp", "from_qonnx"]

SUPPORTED = (
    "Add",
    "AveragePool",
    "BipolarQuant",
    "Conv",
    "Div",
    "Flatten",
    "Gemm",
    "Identity",
    "IntQuant",
    "MatMul",
    "MaxPool",
    "Mul",
    "MultiThreshold",
    "Quant",
    "Relu",
    "Reshape",
    "Transpose",
    "Trunc",
)
"""The ONNX/QONNX op types ``from_qonnx`` accepts."""


class QONNXImportError(UserError, ValueError):
    """A QONNX model that cannot be turned into the IR; the message names the node."""


class UnsupportedONNXOp(QONNXImportError):
    """An ONNX node whose op type has no IR equivalent."""

    def __init__(self, node_name: str, op_type: str) -> None:
        super().__init__(
            f"ONNX node '{node_name}': op type {op_type} is not supported; "
            f"supported: {', '.join(SUPPORTED)}"
        )
        self.node_name = node_name
        self.op_type = op_type


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Act:
    """An ONNX activation held by an IR value: onnx value = raw * 2**-frac * resid.

    ``resid`` is float64 of shape (1,) or (C,) along the channel axis (the IR's last).
    ``layout``: "same" (IR order = ONNX per-sample order), "nchw" (ONNX (C, H, W), IR
    (H, W, C)), "flat_chw" (ONNX C-major flat vector, IR HWC-major; ``chw`` its dims).
    """

    name: str
    resid: np.ndarray
    layout: str = "same"
    chw: tuple[int, int, int] | None = None


def _is_pow2(v: np.ndarray) -> bool:
    v = np.asarray(v, dtype=np.float64).ravel()
    if v.size == 0 or np.any(v <= 0) or np.any(v != v[0]):
        return False
    m, _ = math.frexp(float(v[0]))
    return m == 0.5


def _log2(v) -> int:
    return math.frexp(float(np.asarray(v).ravel()[0]))[1] - 1


def _dyadic(m: float) -> tuple[int, int]:
    """m = M * 2**-E exactly (M odd or zero), for a finite float m."""
    if m == 0:
        return 0, 0
    mant, exp = math.frexp(m)
    big = int(mant * (1 << 53))
    e = 53 - exp
    while big % 2 == 0:
        big //= 2
        e -= 1
    return big, e


def _mult_shift(m: float, budget: int) -> tuple[int, int]:
    """Integer mult and shift in [0, MAX_WIDTH] with mult * 2**-shift == m when that fits
    ``budget`` bits of mult, else the nearest such pair with at most ``budget`` bits."""
    mult, e = _dyadic(m)
    while e < 0:  # integer multiplier
        mult, e = mult * 2, e + 1
    if mult.bit_length() <= budget and e <= MAX_WIDTH:
        return mult, e
    shift = budget - 1 - _log2(m)
    shift = max(0, min(MAX_WIDTH, shift))
    return max(1, round(m * 2.0**shift)), shift


def _channel_vector(c: np.ndarray, rank: int, where: str) -> np.ndarray:
    """A constant broadcast along ONNX axis 1 (or a scalar) as a (1,) or (C,) vector."""
    c = np.asarray(c, dtype=np.float64)
    if c.size == 1:
        return c.reshape(1)
    shape = c.shape
    if len(shape) < rank:
        shape = (1,) * (rank - len(shape)) + shape
    if rank >= 2 and all(d == 1 for i, d in enumerate(shape) if i != 1):
        return c.reshape(-1)
    raise QONNXImportError(f"{where}: constant of shape {c.shape} is not per channel (axis 1)")


_ROUNDING = {"ROUND": Rounding.HALF_EVEN, "HALF_EVEN": Rounding.HALF_EVEN, "FLOOR": "floor"}


def _rounding(mode: str, unsigned: bool, lossless: bool, where: str) -> Rounding:
    mode = mode.upper()
    if mode in _ROUNDING:
        return Rounding(_ROUNDING[mode])
    if mode == "HALF_UP" and unsigned:
        return Rounding.HALF_UP
    if lossless:
        return Rounding.FLOOR
    raise QONNXImportError(
        f"{where}: rounding_mode {mode} has no exact IR rounding here (supported: ROUND, "
        "HALF_EVEN, FLOOR; HALF_UP on unsigned outputs; any mode where no precision is lost)"
    )


def _int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --- the importer ---------------------------------------------------------------------------


class _Importer:
    def __init__(self, model, name: str) -> None:
        from qonnx.util.basic import get_by_name

        self.model = model
        self.graph = model.graph
        self.get_by_name = get_by_name
        self.b = GraphBuilder(name)
        self.acts: dict[str, _Act] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.qscale: dict[str, np.ndarray] = {}  # const name -> the Quant scale it came from
        self.bipolar: set[str] = set()  # constants from BipolarQuant
        self.float_inputs: dict[str, str] = {}  # onnx input -> IR Float input
        self.float_layout: dict[str, str] = {}
        self.skip: set[str] = set()
        self.used: set[str] = set()
        self.opsets = {o.domain: o.version for o in model.model.opset_import}

    # helpers

    def ir_name(self, node) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", node.name or node.output[0]) or "node"
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def shape(self, tensor: str) -> tuple[int, ...]:
        s = self.model.get_tensor_shape(tensor)
        if s is None:
            raise QONNXImportError(f"tensor '{tensor}' has no shape after shape inference")
        return tuple(int(d) for d in s)

    def act(self, node, i: int = 0) -> _Act:
        t = node.input[i]
        if t in self.float_inputs:
            raise QONNXImportError(
                f"ONNX node '{node.name}' ({node.op_type}) reads the float input '{t}' "
                "directly; quantize it first (Quant or BipolarQuant)"
            )
        if t not in self.acts:
            raise QONNXImportError(
                f"ONNX node '{node.name}' ({node.op_type}): input '{t}' must be an activation"
            )
        return self.acts[t]

    def const(self, node, i: int) -> np.ndarray:
        if i >= len(node.input) or node.input[i] not in self.consts:
            raise QONNXImportError(
                f"ONNX node '{node.name}' ({node.op_type}): input {i} must be a constant"
            )
        return self.consts[node.input[i]]

    def dtype(self, a: _Act):
        return self.b.type_of(a.name).dtype

    def consumers(self, tensor: str) -> list:
        return [n for n in self.graph.node if tensor in n.input]

    def fold(self, node) -> None:
        """Evaluate a node whose inputs are all constant with qonnx's executor."""
        from qonnx.core.onnx_exec import execute_node
        from qonnx.util.basic import get_preferred_qonnx_opset

        ctx = {i: self.consts[i] for i in node.input if i}
        for o in node.output:
            ctx[o] = np.zeros(self.model.get_tensor_shape(o) or (), dtype=np.float32)
        opset = self.opsets.get(node.domain, get_preferred_qonnx_opset())
        execute_node(node, ctx, self.graph, opset)
        for o in node.output:
            self.consts[o] = np.asarray(ctx[o])
        if node.op_type in ("Quant", "IntQuant"):
            self.qscale[node.output[0]] = np.asarray(ctx[node.input[1]], dtype=np.float64)
        if node.op_type == "BipolarQuant":
            self.qscale[node.output[0]] = np.asarray(ctx[node.input[1]], dtype=np.float64)
            self.bipolar.add(node.output[0])

    # entry

    def run(self) -> Graph:
        for init in self.graph.initializer:
            from onnx import numpy_helper

            self.consts[init.name] = numpy_helper.to_array(init)
        for inp in self.graph.input:
            if inp.name in self.consts:
                continue
            s = self.shape(inp.name)
            if len(s) == 4:
                n, c, h, w = s
                ir = self.b.input(_safe(inp.name), Float(), (h, w, c))
                self.float_layout[inp.name] = "nchw"
            else:
                ir = self.b.input(_safe(inp.name), Float(), s[1:] or (1,))
                self.float_layout[inp.name] = "same"
            self.float_inputs[inp.name] = ir
        for node in self.graph.node:
            if node.output and node.output[0] in self.skip:
                continue
            if node.op_type not in SUPPORTED and node.op_type != "Constant":
                raise UnsupportedONNXOp(node.name or node.output[0], node.op_type)
            if all((not i) or i in self.consts for i in node.input):
                self.fold(node)
                continue
            handler = getattr(self, f"op_{node.op_type}")
            handler(node)
        outs = []
        for o in self.graph.output:
            if o.name not in self.acts:
                raise QONNXImportError(f"graph output '{o.name}' is not computed from the input")
            outs.append(self.output(o.name, self.acts[o.name]))
        return self.b.build(*outs)

    def output(self, tensor: str, a: _Act) -> str:
        where = f"graph output '{tensor}'"
        if a.layout == "flat_chw":
            raise QONNXImportError(f"{where}: a flattened NCHW tensor cannot be an output")
        t = self.dtype(a)
        if isinstance(t, Bipolar):
            if not np.all(a.resid == 1):
                raise QONNXImportError(f"{where}: Bipolar output with scale {a.resid} != 1")
            return self.b.add(Dequantize(), a.name, name=_unique(self.used, "output"))
        a = self.normalize(a, where)
        return self.b.add(Dequantize(), a.name, name=_unique(self.used, "output"))

    def normalize(self, a: _Act, where: str) -> _Act:
        """Move a uniform power-of-two residual into frac (an identity Requant)."""
        if np.all(a.resid == 1):
            return a
        if not _is_pow2(a.resid):
            raise QONNXImportError(
                f"{where}: scale {a.resid.tolist()} is not a power of two; the IR's "
                "Dequantize needs a power-of-two scale"
            )
        t = self.dtype(a)
        k = _log2(a.resid)
        op = Requant(Fixed(t.width, t.frac - k, t.signed))
        name = self.b.add(op, a.name, name=_unique(self.used, f"{a.name}_rescale"))
        return _Act(name, np.ones(1), a.layout, a.chw)

    # --- quantizers ------------------------------------------------------------------------

    def clip(self, name: str, lo: int, hi: int, node) -> str:
        """Clip a raw to [lo, hi] with a MultiThreshold when its type is wider."""
        t = self.b.type_of(name).dtype
        if (t.min_raw, t.max_raw) == (lo, hi):
            return name
        th = Weight(np.arange(lo + 1, hi + 1).reshape(1, -1), Fixed.fitting(lo, hi, t.frac))
        op = MultiThreshold(th, Fixed.fitting(lo, hi, t.frac), offset=lo)
        return self.b.add(op, name, name=_unique(self.used, f"{self.ir_name(node)}_clip"))

    def op_Quant(self, node) -> None:
        where = f"ONNX node '{node.name}' (Quant)"
        at = _attrs(node)
        signed, narrow = bool(at.get("signed", 1)), bool(at.get("narrow", 0))
        mode = _str(at.get("rounding_mode", "ROUND"))
        scale = self.const(node, 1).astype(np.float64)
        zp = self.const(node, 2).astype(np.float64)
        bits = self.const(node, 3).ravel()
        if bits.size != 1 or bits[0] != round(bits[0]) or not 1 <= bits[0] <= MAX_WIDTH:
            raise QONNXImportError(f"{where}: bitwidth {bits.tolist()} must be one integer")
        bits = int(bits[0])
        if np.any(zp != 0):
            raise QONNXImportError(f"{where}: zero_point {zp.tolist()} must be 0 on activations")
        if np.any(scale <= 0):
            raise QONNXImportError(f"{where}: scale must be positive")
        if bits == 1 and signed:
            self.bipolar_quant(node, scale, where)
            return
        lo, hi = _int_range(bits, signed, narrow)
        src = node.input[0]
        if src in self.float_inputs:
            if not _is_pow2(scale):
                raise QONNXImportError(
                    f"{where}: the input quantizer's scale {scale.ravel().tolist()} must be "
                    "one power of two"
                )
            fout = -_log2(scale)
            rnd = _rounding(mode, not signed, False, where)
            q = self.b.add(
                Quantize(Fixed.fitting(lo, hi, fout), rnd),
                self.float_inputs[src],
                name=self.ir_name(node),
            )
            q = self.clip(q, lo, hi, node)
            self.acts[node.output[0]] = _Act(q, np.ones(1), self.float_layout[src])
            return
        a = self.act(node)
        xt = self.dtype(a)
        if not isinstance(xt, Fixed):
            raise QONNXImportError(f"{where}: input must be an integer activation, not {xt}")
        rank = len(self.shape(src))
        s = _channel_vector(scale, rank, where)
        if _is_pow2(s):
            fout, rout = -_log2(s), np.ones(1)
        else:
            fout, rout = 0, s
        m = a.resid * 2.0**-xt.frac / s  # (1,) or (C,)
        xbits = xt.width - int(xt.signed)
        budget = max(1, min(31, MAX_WIDTH - xbits - 1))
        ms = [_mult_shift(float(v), budget) for v in m]
        lossless = all(sh == 0 for _, sh in ms)
        rnd = _rounding(mode, not signed, lossless, where)
        op = Requant(
            Fixed.fitting(lo, hi, fout), tuple(v for v, _ in ms), tuple(v for _, v in ms), rnd
        )
        q = self.b.add(op, a.name, name=self.ir_name(node))
        q = self.clip(q, lo, hi, node)
        self.acts[node.output[0]] = _Act(q, rout, a.layout, a.chw)

    op_IntQuant = op_Quant

    def bipolar_quant(self, node, scale, where: str) -> None:
        src = node.input[0]
        name = self.ir_name(node)
        if src in self.float_inputs:
            x = self.b.add(
                Quantize(Fixed(2, 0, True), Rounding.FLOOR),
                self.float_inputs[src],
                name=f"{name}_sign",
            )
            layout, chw = self.float_layout[src], None
        else:
            a = self.act(node)
            if not isinstance(self.dtype(a), Fixed):
                raise QONNXImportError(f"{where}: input must be an integer activation")
            x, layout, chw = a.name, a.layout, a.chw
        frac = self.b.type_of(x).dtype.frac
        th = Weight(np.zeros((1, 1), dtype=np.int64), Fixed(1, frac, True))
        y = self.b.add(MultiThreshold(th, Bipolar()), x, name=name)
        rank = len(self.shape(src))
        self.acts[node.output[0]] = _Act(y, _channel_vector(scale, rank, where), layout, chw)

    def op_BipolarQuant(self, node) -> None:
        scale = self.const(node, 1).astype(np.float64)
        if np.any(scale <= 0):
            raise QONNXImportError(f"ONNX node '{node.name}' (BipolarQuant): scale must be > 0")
        self.bipolar_quant(node, scale, f"ONNX node '{node.name}' (BipolarQuant)")

    def op_Trunc(self, node) -> None:
        where = f"ONNX node '{node.name}' (Trunc)"
        at = _attrs(node)
        mode = _str(at.get("rounding_mode", "FLOOR"))
        a = self.act(node)
        xt = self.dtype(a)
        if not isinstance(xt, Fixed):
            raise QONNXImportError(f"{where}: input must be an integer activation")
        scale = self.const(node, 1).astype(np.float64)
        if np.any(self.const(node, 2) != 0):
            raise QONNXImportError(f"{where}: zero_point must be 0")
        s = _channel_vector(scale, len(self.shape(node.input[0])), where)
        m1 = a.resid * 2.0**-xt.frac / s
        if np.any(m1 != np.round(m1)) or np.any(m1 < 1) or np.any(m1 != m1[0]):
            raise QONNXImportError(
                f"{where}: the input scale {s.tolist()} must divide the input's scale into "
                "one integer"
            )
        mult = int(m1[0])
        if len(node.input) == 5:  # v1: drop in_bits - out_bits, output keeps the input scale
            k = int(self.const(node, 3).ravel()[0]) - int(self.const(node, 4).ravel()[0])
            out_scale = s
            lo = (xt.min_raw * mult) >> k
            hi = ((xt.max_raw * mult) >> k) + 1
            signed_out = xt.signed
        else:  # v2: trunc scale 2**round(log2(out_scale / scale)), clipped to out bits
            out_scale = _channel_vector(self.const(node, 4), 2, where)
            ratio = out_scale / s
            k = int(np.round(np.log2(ratio[0])))
            bits = int(self.const(node, 5).ravel()[0])
            signed_out = bool(at.get("signed", 1))
            lo, hi = _int_range(bits, signed_out, bool(at.get("narrow", 0)))
        if k < 0:
            raise QONNXImportError(f"{where}: truncates by {k} bits; expected >= 0")
        if _is_pow2(out_scale):
            fout, rout = -_log2(out_scale), np.ones(1)
        else:
            fout, rout = 0, out_scale
        rnd = _rounding(mode, not signed_out, k == 0, where)
        op = Requant(Fixed.fitting(lo, hi, fout), (mult,), (k,), rnd)
        y = self.b.add(op, a.name, name=self.ir_name(node))
        if len(node.input) == 6:
            y = self.clip(y, lo, hi, node)
        self.acts[node.output[0]] = _Act(y, rout, a.layout, a.chw)

    def op_MultiThreshold(self, node) -> None:
        where = f"ONNX node '{node.name}' (MultiThreshold)"
        at = _attrs(node)
        a = self.act(node)
        xt = self.dtype(a)
        if not isinstance(xt, Fixed):
            raise QONNXImportError(f"{where}: input must be an integer activation")
        layout = _str(at.get("data_layout", ""))
        rank = len(self.shape(node.input[0]))
        ir_chlast = a.layout == "nchw" or rank == 2
        if layout in ("NHWC", "NWC") and a.layout == "same":
            ir_chlast = True
        elif layout and layout.index("C") != 1:
            ir_chlast = False
        if not ir_chlast:
            raise QONNXImportError(f"{where}: the channel axis must map to the IR's last axis")
        t = self.const(node, 1).astype(np.float64)
        c = self.b.type_of(a.name).shape[-1]
        unit = 2.0**-xt.frac * a.resid  # (1,) or (C,)
        if t.shape[0] == 1 and unit.size > 1:
            t = np.repeat(t, c, axis=0)
        raw = np.ceil(t / unit.reshape(-1, 1))
        raw = np.clip(raw, xt.min_raw, xt.max_raw + 1).astype(np.int64)
        raw = np.sort(raw, axis=1)
        th = Weight(raw, Fixed.fitting(int(raw.min()), int(raw.max()), xt.frac))
        n = raw.shape[1]
        oscale = float(at.get("out_scale", 1.0))
        obias = float(at.get("out_bias", 0.0))
        odt = _str(at.get("out_dtype", ""))
        name = self.ir_name(node)
        if odt == "BIPOLAR" or (n == 1 and oscale == 2.0 and obias == -1.0):
            if (oscale, obias) not in ((2.0, -1.0), (1.0, 0.0)) or n != 1:
                raise QONNXImportError(f"{where}: a BIPOLAR output needs one threshold")
            y = self.b.add(MultiThreshold(th, Bipolar()), a.name, name=name)
            self.acts[node.output[0]] = _Act(y, np.ones(1), a.layout, a.chw)
            return
        if oscale <= 0 or obias / oscale != round(obias / oscale):
            raise QONNXImportError(
                f"{where}: out_bias / out_scale = {obias}/{oscale} must be an integer"
            )
        off = int(round(obias / oscale))
        sc = np.array([oscale])
        fout, rout = (-_log2(sc), np.ones(1)) if _is_pow2(sc) else (0, sc)
        op = MultiThreshold(th, Fixed.fitting(off, off + n, fout), offset=off)
        y = self.b.add(op, a.name, name=name)
        self.acts[node.output[0]] = _Act(y, rout, a.layout, a.chw)

    # --- linear ----------------------------------------------------------------------------

    def weight(self, node, i: int, w: np.ndarray, out_axis: int, where: str):
        """Integer raws, frac and per-output residual of a constant weight tensor."""
        tensor = node.input[i]
        w = w.astype(np.float64)
        if tensor in self.bipolar:
            s = self.qscale[tensor]
            raw = (w > 0).astype(np.int64)
            return raw, None, _out_vector(s, w.ndim, out_axis, where)
        if tensor in self.qscale:
            s = _out_vector(self.qscale[tensor], w.ndim, out_axis, where)
            shape = [1] * w.ndim
            shape[out_axis] = -1
            ratio = w / s.reshape(shape)
            raw = np.round(ratio)
            if np.any(np.abs(ratio - raw) > 1e-6):
                raise QONNXImportError(f"{where}: weights are not on their Quant grid")
            if _is_pow2(s):
                return raw.astype(np.int64), -_log2(s), np.ones(1)
            return raw.astype(np.int64), 0, s
        for f in range(0, 48):
            r = w * 2.0**f
            if np.all(r == np.round(r)) and np.all(np.abs(r) < 2.0**40):
                return r.astype(np.int64), f, np.ones(1)
        raise QONNXImportError(
            f"{where}: float weights without a Quant are not fixed-point numbers"
        )

    def bias_for(self, node):
        """A constant Add right after a linear node: its bias (absorbed)."""
        cons = self.consumers(node.output[0])
        if len(cons) == 1 and cons[0].op_type == "Add":
            add = cons[0]
            other = [t for t in add.input if t != node.output[0]]
            outs = [o.name for o in self.graph.output]
            if len(other) == 1 and other[0] in self.consts and node.output[0] not in outs:
                return self.consts[other[0]].astype(np.float64), add
        return None, None

    def linear(self, node, a: _Act, raw_w, fw, rw, bias, binary: bool, make) -> None:
        """Emit a Dense/Conv2d-like node: make(weight, bias) -> op."""
        where = f"ONNX node '{node.name}' ({node.op_type})"
        xt = self.dtype(a)
        if a.resid.size != 1:
            raise QONNXImportError(f"{where}: the input's scale must be one number per tensor")
        if binary:
            op = make(Weight(raw_w, Bipolar()), None)
            if bias is not None:
                raise QONNXImportError(f"{where}: a Bipolar layer cannot have a bias")
            self.acts[node.output[0]] = _Act(
                self.b.add(op, a.name, name=self.ir_name(node)), a.resid * rw, "same"
            )
            return
        if isinstance(xt, Bipolar):
            raise QONNXImportError(f"{where}: a Bipolar input needs Bipolar weights")
        fw = 0 if fw is None else fw
        if rw is None:
            rw = np.ones(1)
        resid = a.resid * rw
        braw = None
        k = 0
        if bias is not None:
            unit = 2.0 ** -(xt.frac + fw) * resid
            for k in range(0, 41):
                r = bias * 2.0**k / unit
                if np.all(np.abs(r - np.round(r)) <= 1e-9 * np.maximum(1, np.abs(r))):
                    braw = np.round(r).astype(np.int64)
                    break
            else:
                raise QONNXImportError(f"{where}: the bias is not on the accumulator's grid")
        raw_w = raw_w * (1 << k)
        wt = Fixed.fitting(min(int(raw_w.min()), 0), max(int(raw_w.max()), 0), fw + k)
        bt = None
        if braw is not None:
            bt = Weight(
                braw, Fixed.fitting(min(int(braw.min()), 0), int(braw.max()), fw + k + xt.frac)
            )
        op = make(Weight(raw_w, wt), bt)
        y = self.b.add(op, a.name, name=self.ir_name(node))
        self.acts[node.output[0]] = _Act(y, resid, "same" if a.layout != "nchw" else "nchw")

    def dense(self, node, w_onnx: np.ndarray, widx: int) -> None:
        """w_onnx is (out, in) in ONNX's input order."""
        where = f"ONNX node '{node.name}' ({node.op_type})"
        a = self.act(node)
        if a.layout == "nchw":
            raise QONNXImportError(f"{where}: input must be flat, not an image")
        raw_w, fw, rw = self.weight(node, widx, w_onnx, 0, where)
        if a.layout == "flat_chw":
            c, h, w = a.chw
            raw_w = raw_w.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(raw_w.shape[0], -1)
        has_input_bias = len(node.input) > 2 and bool(node.input[2])
        bias, skip = (None, None) if has_input_bias else self.bias_for(node)
        if has_input_bias:
            bias = self.const(node, 2).astype(np.float64).ravel()
            bias = np.broadcast_to(bias, (raw_w.shape[0],))
        elif bias is not None:
            bias = np.broadcast_to(bias.ravel(), (raw_w.shape[0],))
        binary = node.input[widx] in self.bipolar and isinstance(self.dtype(a), Bipolar)
        make = (lambda wt, bt: BinaryDense(wt)) if binary else (lambda wt, bt: Dense(wt, bt))
        self.linear(node, a, raw_w, fw, rw, bias, binary, make)
        self.absorb(node, skip)

    def absorb(self, node, add) -> None:
        """The bias Add after ``node`` was folded into it: its output is the node's."""
        if add is not None:
            self.skip.add(add.output[0])
            self.acts[add.output[0]] = self.acts[node.output[0]]

    def op_Gemm(self, node) -> None:
        at = _attrs(node)
        where = f"ONNX node '{node.name}' (Gemm)"
        if at.get("alpha", 1.0) != 1.0 or at.get("beta", 1.0) != 1.0 or at.get("transA", 0):
            raise QONNXImportError(f"{where}: needs alpha = beta = 1 and transA = 0")
        w = self.const(node, 1)
        if not at.get("transB", 0):
            w = w.T
            if node.input[1] in self.qscale:
                self.qscale[node.input[1]] = np.asarray(self.qscale[node.input[1]]).T
        self.dense(node, w, 1)

    def op_MatMul(self, node) -> None:
        w = self.const(node, 1)
        if w.ndim != 2:
            raise QONNXImportError(f"ONNX node '{node.name}' (MatMul): weight must be 2-D")
        if node.input[1] in self.qscale:
            self.qscale[node.input[1]] = np.asarray(self.qscale[node.input[1]]).T
        self.dense(node, w.T, 1)

    def op_Conv(self, node) -> None:
        where = f"ONNX node '{node.name}' (Conv)"
        at = _attrs(node)
        a = self.act(node)
        if a.layout != "nchw":
            raise QONNXImportError(f"{where}: input must be an NCHW image")
        if any(d != 1 for d in at.get("dilations", [1, 1])):
            raise QONNXImportError(f"{where}: dilations must be 1")
        if _str(at.get("auto_pad", "NOTSET")) not in ("NOTSET", "VALID"):
            raise QONNXImportError(f"{where}: auto_pad must be NOTSET or VALID")
        w = self.const(node, 1)
        raw_w, fw, rw = self.weight(node, 1, w, 0, where)
        raw_w = raw_w.transpose(0, 2, 3, 1)
        pt, pl, pb, pr = [int(p) for p in at.get("pads", [0, 0, 0, 0])]
        stride = tuple(int(s) for s in at.get("strides", [1, 1]))
        groups = int(at.get("group", 1))
        has_input_bias = len(node.input) > 2 and bool(node.input[2])
        bias, skip = (None, None) if has_input_bias else self.bias_for(node)
        if bias is not None:
            bias = _channel_vector(bias, 4, where)
            bias = np.broadcast_to(bias, (raw_w.shape[0],))
        if has_input_bias:
            bias = self.const(node, 2).astype(np.float64).ravel()
        binary = node.input[1] in self.bipolar and isinstance(self.dtype(a), Bipolar)
        if binary:
            if (pt, pb, pl, pr) != (0, 0, 0, 0):
                raise QONNXImportError(f"{where}: a Bipolar convolution cannot be padded")

            def make(wt, bt):
                return BinaryConv2d(wt, stride, groups)
        else:

            def make(wt, bt):
                return Conv2d(wt, bt, stride, (pt, pb, pl, pr), groups)

        self.linear(node, a, raw_w, fw, rw, bias, binary, make)
        self.acts[node.output[0]] = _Act(
            self.acts[node.output[0]].name, self.acts[node.output[0]].resid, "nchw"
        )
        self.absorb(node, skip)

    # --- elementwise and shape -------------------------------------------------------------

    def op_Add(self, node) -> None:
        where = f"ONNX node '{node.name}' (Add)"
        if any(i in self.consts for i in node.input):
            raise QONNXImportError(
                f"{where}: adding a constant is only supported as the bias of the "
                "MatMul/Gemm/Conv right before it"
            )
        a, b = self.act(node, 0), self.act(node, 1)
        if a.resid.shape != b.resid.shape or np.any(a.resid != b.resid):
            if _is_pow2(a.resid) and _is_pow2(b.resid):
                a, b = self.normalize(a, where), self.normalize(b, where)
            else:
                raise QONNXImportError(f"{where}: operands have different scales")
        if a.layout != b.layout:
            raise QONNXImportError(f"{where}: operands have different layouts")
        y = self.b.add(Add(), a.name, b.name, name=self.ir_name(node))
        self.acts[node.output[0]] = _Act(y, a.resid, a.layout, a.chw)

    def scale_by(self, node, inverse: bool) -> None:
        where = f"ONNX node '{node.name}' ({node.op_type})"
        if node.input[0] not in self.acts:
            raise QONNXImportError(f"{where}: only activation * constant is supported")
        a = self.act(node, 0)
        c = _channel_vector(self.const(node, 1), len(self.shape(node.input[0])), where)
        if np.any(c <= 0):
            raise QONNXImportError(f"{where}: the constant must be positive")
        resid = a.resid / c if inverse else a.resid * c
        self.acts[node.output[0]] = _Act(a.name, resid, a.layout, a.chw)

    def op_Mul(self, node) -> None:
        if node.input[0] in self.consts:
            node.input[0], node.input[1] = node.input[1], node.input[0]
        self.scale_by(node, inverse=False)

    def op_Div(self, node) -> None:
        self.scale_by(node, inverse=True)

    def op_Relu(self, node) -> None:
        a = self.act(node)
        if not isinstance(self.dtype(a), Fixed):
            raise QONNXImportError(f"ONNX node '{node.name}' (Relu): input must be Fixed")
        y = self.b.add(ReLU(), a.name, name=self.ir_name(node))
        self.acts[node.output[0]] = _Act(y, a.resid, a.layout, a.chw)

    def op_MaxPool(self, node) -> None:
        where = f"ONNX node '{node.name}' (MaxPool)"
        at = _attrs(node)
        a = self.act(node)
        if a.layout != "nchw":
            raise QONNXImportError(f"{where}: input must be an NCHW image")
        if any(p != 0 for p in at.get("pads", [0])) or at.get("ceil_mode", 0):
            raise QONNXImportError(f"{where}: padding and ceil_mode are not supported")
        if any(d != 1 for d in at.get("dilations", [1, 1])):
            raise QONNXImportError(f"{where}: dilations must be 1")
        k = tuple(int(v) for v in at["kernel_shape"])
        s = tuple(int(v) for v in at.get("strides", [1, 1]))
        y = self.b.add(MaxPool2d(k, s), a.name, name=self.ir_name(node))
        self.acts[node.output[0]] = _Act(y, a.resid, "nchw")

    def flatten(self, node, a: _Act) -> None:
        if a.layout == "nchw" and a.resid.size != 1:
            raise QONNXImportError(
                f"ONNX node '{node.name}' ({node.op_type}): per-channel scales cannot be flattened"
            )
        t = self.b.type_of(a.name)
        if len(t.shape) == 1:
            self.acts[node.output[0]] = a
            return
        y = self.b.add(Flatten(), a.name, name=self.ir_name(node))
        if a.layout == "nchw" and t.shape[-1] > 1 and t.shape[0] * t.shape[1] > 1:
            h, w, c = t.shape
            self.acts[node.output[0]] = _Act(y, a.resid, "flat_chw", (c, h, w))
        else:
            self.acts[node.output[0]] = _Act(y, a.resid, "same")

    def op_Flatten(self, node) -> None:
        if _attrs(node).get("axis", 1) != 1:
            raise QONNXImportError(f"ONNX node '{node.name}' (Flatten): axis must be 1")
        self.flatten(node, self.act(node))

    def op_Reshape(self, node) -> None:
        a = self.act(node)
        ins, outs = self.shape(node.input[0]), self.shape(node.output[0])
        if outs == ins:
            self.acts[node.output[0]] = a
        elif len(outs) == 2 and outs[0] == ins[0]:
            self.flatten(node, a)
        elif a.layout == "same" and outs[0] == ins[0]:
            if a.resid.size != 1:
                raise QONNXImportError(
                    f"ONNX node '{node.name}' (Reshape): per-channel scales cannot be reshaped"
                )
            y = self.b.add(Reshape(outs[1:]), a.name, name=self.ir_name(node))
            self.acts[node.output[0]] = _Act(y, a.resid, "same")
        else:
            raise QONNXImportError(
                f"ONNX node '{node.name}' (Reshape): {ins} -> {outs} is not supported "
                "(flatten to (N, -1), or reshape a tensor that is not an NCHW image)"
            )

    def op_AveragePool(self, node) -> None:
        where = f"ONNX node '{node.name}' (AveragePool)"
        at = _attrs(node)
        a = self.act(node)
        if a.layout != "nchw":
            raise QONNXImportError(f"{where}: input must be an NCHW image")
        if any(p != 0 for p in at.get("pads", [0])) or at.get("ceil_mode", 0):
            raise QONNXImportError(f"{where}: padding and ceil_mode are not supported")
        k = tuple(int(v) for v in at["kernel_shape"])
        s = tuple(int(v) for v in at.get("strides", [1, 1]))
        try:
            op = AvgPool2d(k, s)
        except IRError as e:
            raise QONNXImportError(f"{where}: {e}") from None
        y = self.b.add(op, a.name, name=self.ir_name(node))
        self.acts[node.output[0]] = _Act(y, a.resid, "nchw")

    def op_Transpose(self, node) -> None:
        a = self.act(node)
        perm = tuple(_attrs(node).get("perm", ()))
        if perm == (0, 2, 3, 1) and a.layout == "nchw":
            self.acts[node.output[0]] = _Act(a.name, a.resid, "same")
        elif perm == (0, 3, 1, 2) and a.layout == "same" and len(self.shape(node.input[0])) == 4:
            self.acts[node.output[0]] = _Act(a.name, a.resid, "nchw")
        else:
            raise QONNXImportError(
                f"ONNX node '{node.name}' (Transpose): only NCHW <-> NHWC is supported, "
                f"not perm {perm}"
            )

    def op_Identity(self, node) -> None:
        self.acts[node.output[0]] = self.act(node)


def _out_vector(s, ndim: int, out_axis: int, where: str) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.size == 1:
        return s.reshape(1)
    shape = list(s.shape)
    shape = [1] * (ndim - len(shape)) + shape
    if all(d == 1 for i, d in enumerate(shape) if i != out_axis):
        return s.reshape(-1)
    raise QONNXImportError(f"{where}: weight scale of shape {s.shape} is not per output channel")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "x"


def _unique(used: set[str], base: str) -> str:
    name, k = base, 1
    while name in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name)
    return name


def from_qonnx(model, *, name: str | None = None, cleanup: bool = True) -> Graph:
    """Import an ONNX/QONNX model (a path or an ``onnx.ModelProto``) as a verified IR graph.

    The model is cleaned up with qonnx's ``cleanup_model`` (shape inference, constant
    folding, unique names) unless ``cleanup=False``. The graph's outputs are
    ``Dequantize`` values equal to the ONNX outputs (see the module docstring for the
    exactness contract). Raises ``UnsupportedONNXOp`` for an op outside ``SUPPORTED`` and
    ``QONNXImportError`` for a supported op used in a way the IR cannot express.
    """
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.cleanup import cleanup_model
    except ImportError as e:  # pragma: no cover - the onnx extra installs it
        raise QONNXImportError(
            f"from_qonnx needs qonnx ({e}); install it with: pip install -e '.[onnx]'"
        ) from None
    if isinstance(model, str | Path):
        path = Path(model)
        if not path.is_file():
            raise QONNXImportError(f"QONNX file '{path}' does not exist")
        default = path.stem
        mw = ModelWrapper(str(path))
    else:
        default = getattr(getattr(model, "graph", None), "name", "") or "qonnx"
        mw = ModelWrapper(model.model if hasattr(model, "model") else model)
    for n in mw.graph.node:  # mark unsupported ops before cleanup trips over them
        if n.op_type not in SUPPORTED and n.op_type != "Constant":
            raise UnsupportedONNXOp(n.name or n.output[0], n.op_type)
    if cleanup:
        mw = cleanup_model(mw)
    return _Importer(mw, _safe(name or default)).run()
