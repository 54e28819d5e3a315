"""IR -> QONNX: ``to_qonnx(graph)`` writes a pqflow graph as an ONNX model with qonnx ops.

Every ONNX tensor holds the float value of the IR value it stands for (raw * 2**-frac;
Bipolar as -1/+1), so qonnx's executor, FINN and other QONNX tools read it directly:

- ``Quantize`` -> ``Quant`` (scale 2**-frac, zero point 0, its width and sign);
- weights -> float initializers through a ``Quant`` (``BipolarQuant`` for Bipolar);
- ``Dense`` -> ``MatMul`` (+ ``Add`` bias), ``Conv2d`` -> ``Conv`` (bias input),
  ``BinaryDense`` / ``BinaryConv2d`` -> ``MatMul`` / ``Conv`` on -1/+1 values;
- ``Requant`` -> ``Mul`` by mult * 2**(in frac - out frac - shift) (left out when 1) and a
  ``Quant`` at the output scale; ``MultiThreshold`` -> qonnx ``MultiThreshold`` with
  out_scale = 2**-frac and out_bias = offset * 2**-frac (Bipolar: 2 and -1);
- ``ReLU`` -> ``Relu``, ``MaxPool2d`` -> ``MaxPool``, ``AvgPool2d`` -> ``AveragePool``
  (the IR's window sum at a frac log2(k) finer is the mean), ``Add`` -> ``Add``,
  ``Flatten`` / ``Reshape`` -> ``Transpose`` to NHWC + ``Flatten`` / ``Reshape``,
  ``Dequantize`` -> ``Identity``.

Layout: IR images (H, W, C) are ONNX NCHW tensors, so the model takes (N, C, H, W).
The batch dimension is symbolic ("N").

Exactness: the QONNX model computes the same real numbers as the IR. qonnx's executor
runs it in float32, which is exact while every value (accumulators, and raw * mult
before a Requant) stays below 2**24 units of its scale. Overflow ``wrap`` has no QONNX
equivalent, nor has ``half_up`` on a signed result (QONNX's HALF_UP rounds ties away
from zero): both raise ``QONNXExportError``.
"""

from __future__ import annotations

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
    Graph,
    MaxPool2d,
    MultiThreshold,
    Overflow,
    Quantize,
    ReLU,
    Requant,
    Reshape,
    Rounding,
    verify,
)

__all__ = ["QONNXExportError", "to_qonnx"]

QONNX_DOMAIN = "qonnx.custom_op.general"
_MODES = {Rounding.HALF_EVEN: "ROUND", Rounding.FLOOR: "FLOOR", Rounding.HALF_UP: "HALF_UP"}


class QONNXExportError(UserError, ValueError):
    """A graph that QONNX cannot express; the message names the node."""


class _Exporter:
    def __init__(self, graph: Graph) -> None:
        from onnx import TensorProto, helper, numpy_helper

        self.g = graph
        self.types = graph.types()
        self.h, self.nh, self.TP = helper, numpy_helper, TensorProto
        self.nodes: list = []
        self.inits: list = []
        self.names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.names or name in self.types:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def const(self, base: str, value) -> str:
        name = self.fresh(base)
        self.inits.append(self.nh.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, ins: list[str], out: str | None = None, base: str = "", **attrs):
        out = out or self.fresh(base or op.lower())
        domain = QONNX_DOMAIN if op in ("Quant", "BipolarQuant", "MultiThreshold") else ""
        name = self.fresh(f"{out}_{op}")
        self.nodes.append(self.h.make_node(op, ins, [out], name=name, domain=domain, **attrs))
        return out

    def quant(self, x: str, t: Fixed, rounding: Rounding, out: str | None, base: str) -> str:
        """Quant to ``t`` (scale 2**-frac): round(x * 2**frac) clipped to t's raw range."""
        return self.node(
            "Quant",
            [
                x,
                self.const(f"{base}_scale", 2.0**-t.frac),
                self.const(f"{base}_zeropt", 0.0),
                self.const(f"{base}_bitwidth", float(t.width)),
            ],
            out,
            base,
            signed=int(t.signed),
            narrow=0,
            rounding_mode=_MODES[rounding],
        )

    def weight(self, base: str, w, onnx_order: np.ndarray) -> str:
        """A float initializer of the weight values through a Quant / BipolarQuant."""
        if isinstance(w.dtype, Bipolar):
            vals = 2.0 * onnx_order - 1.0
            init = self.const(f"{base}_float", vals)
            return self.node(
                "BipolarQuant", [init, self.const(f"{base}_scale", 1.0)], base=f"{base}_q"
            )
        t = w.dtype
        init = self.const(f"{base}_float", onnx_order * 2.0**-t.frac)
        return self.quant(init, t, Rounding.HALF_EVEN, None, f"{base}_q")

    def check_rounding(self, n, rounding: Rounding, t: Fixed, overflow: Overflow) -> None:
        if overflow != Overflow.SATURATE:
            raise QONNXExportError(
                f"{n.describe()}: overflow {overflow} has no QONNX equivalent (Quant saturates)"
            )
        if rounding == Rounding.HALF_UP and t.signed:
            raise QONNXExportError(
                f"{n.describe()}: rounding half_up on a signed result has no QONNX "
                "equivalent (QONNX's HALF_UP rounds ties away from zero)"
            )

    def nhwc(self, x: str, shape) -> str:
        """The NHWC view of an IR image (ONNX NCHW) before a row-major flatten/reshape."""
        if len(shape) == 3:
            return self.node("Transpose", [x], base=f"{x}_nhwc", perm=[0, 2, 3, 1])
        return x

    def emit(self, n) -> None:
        op, x = n.op, list(n.inputs)
        it = [self.types[i] for i in n.inputs]
        out = n.name
        if isinstance(op, Quantize):
            self.check_rounding(n, op.rounding, op.to, op.overflow)
            self.quant(x[0], op.to, op.rounding, out, out)
        elif isinstance(op, Dequantize):
            self.node("Identity", x, out)
        elif isinstance(op, Dense | BinaryDense):
            w = self.weight(f"{out}_w", op.weight, op.weight.data.T.astype(np.float64))
            if getattr(op, "bias", None) is not None:
                acc = self.node("MatMul", [x[0], w], base=f"{out}_matmul")
                b = self.const(f"{out}_b", op.bias.data * 2.0**-op.bias.dtype.frac)
                self.node("Add", [acc, b], out)
            else:
                self.node("MatMul", [x[0], w], out)
        elif isinstance(op, Conv2d | BinaryConv2d):
            w = self.weight(f"{out}_w", op.weight, op.weight.data.transpose(0, 3, 1, 2) * 1.0)
            ins = [x[0], w]
            if getattr(op, "bias", None) is not None:
                ins.append(self.const(f"{out}_b", op.bias.data * 2.0**-op.bias.dtype.frac))
            pt, pb, pl, pr = op.padding
            self.node(
                "Conv",
                ins,
                out,
                kernel_shape=list(op.weight.shape[1:3]),
                strides=list(op.stride),
                pads=[pt, pl, pb, pr],
                group=op.groups,
            )
        elif isinstance(op, Requant):
            self.check_rounding(n, op.rounding, op.to, op.overflow)
            fin = it[0].dtype.frac
            c = np.array(
                [m * 2.0 ** (fin - op.to.frac - s) for m, s in zip(*_per_channel(op), strict=True)]
            )
            y = x[0]
            if np.any(c != 1):
                shape = (1, -1, 1, 1) if len(it[0].shape) == 3 else (1, -1)
                y = self.node("Mul", [y, self.const(f"{out}_mult", c.reshape(shape))])
            self.quant(y, op.to, op.rounding, out, out)
        elif isinstance(op, MultiThreshold):
            f = it[0].dtype.frac
            th = self.const(f"{out}_thresholds", op.thresholds.data * 2.0**-f)
            layout = "NCHW" if len(it[0].shape) == 3 else "NC"
            if isinstance(op.out, Bipolar):
                attrs = dict(out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0)
            else:
                t = op.out
                lo, hi = op.offset, op.offset + op.thresholds.shape[1]
                dt = f"{'INT' if lo < 0 else 'UINT'}{Fixed.fitting(lo, hi, 0).width}"
                attrs = dict(
                    out_dtype=dt, out_scale=2.0**-t.frac, out_bias=op.offset * 2.0**-t.frac
                )
            self.node("MultiThreshold", [x[0], th], out, data_layout=layout, **attrs)
        elif isinstance(op, ReLU):
            self.node("Relu", x, out)
        elif isinstance(op, Add):
            self.node("Add", x, out)
        elif isinstance(op, MaxPool2d):
            self.node("MaxPool", x, out, kernel_shape=list(op.kernel), strides=list(op.stride))
        elif isinstance(op, AvgPool2d):
            self.node("AveragePool", x, out, kernel_shape=list(op.kernel), strides=list(op.stride))
        elif isinstance(op, Flatten):
            self.node("Flatten", [self.nhwc(x[0], it[0].shape)], out, axis=1)
        elif isinstance(op, Reshape):
            y = self.nhwc(x[0], it[0].shape)
            shape = self.fresh(f"{out}_shape")
            self.inits.append(self.nh.from_array(np.array([-1, *op.shape], np.int64), shape))
            if len(op.shape) == 3:
                y = self.node("Reshape", [y, shape], base=f"{out}_nhwc")
                self.node("Transpose", [y], out, perm=[0, 3, 1, 2])
            else:
                self.node("Reshape", [y, shape], out)
        else:
            raise QONNXExportError(
                f"{n.describe()}: op {type(op).__name__} has no QONNX export "
                "(add it in pqflow/models/qonnx_export.py)"
            )

    def run(self):
        h = self.h
        ins = []
        for v in self.g.inputs:
            s = v.type.shape
            dims = ["N", s[2], s[0], s[1]] if len(s) == 3 else ["N", *s]
            ins.append(h.make_tensor_value_info(v.name, self.TP.FLOAT, dims))
            self.names.add(v.name)
        for n in self.g.nodes:
            self.names.add(n.name)
        for n in self.g.nodes:
            self.emit(n)
        outs = []
        for o in self.g.outputs:
            s = self.types[o].shape
            dims = ["N", s[2], s[0], s[1]] if len(s) == 3 else ["N", *s]
            outs.append(h.make_tensor_value_info(o, self.TP.FLOAT, dims))
        graph = h.make_graph(self.nodes, self.g.name, ins, outs, initializer=self.inits)
        model = h.make_model(
            graph,
            producer_name="pqflow",
            opset_imports=[h.make_opsetid("", 13), h.make_opsetid(QONNX_DOMAIN, 1)],
        )
        return model


def _per_channel(op: Requant) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n = max(len(op.mult), len(op.shift))
    mult = op.mult * n if len(op.mult) == 1 else op.mult
    shift = op.shift * n if len(op.shift) == 1 else op.shift
    return mult, shift


def to_qonnx(graph: Graph):
    """The QONNX ``onnx.ModelProto`` of a verified graph (see the module docstring).

    Raises ``QONNXExportError`` naming the node when an op or attribute has no QONNX
    equivalent. The model passes ``onnx.checker`` (custom ops aside) and runs in
    ``qonnx.core.onnx_exec.execute_onnx`` after ``cleanup_model``.
    """
    try:
        import onnx  # noqa: F401
    except ImportError as e:  # pragma: no cover - the onnx extra installs it
        raise QONNXExportError(
            f"to_qonnx needs onnx ({e}); install it with: pip install -e '.[onnx]'"
        ) from None
    return _Exporter(verify(graph)).run()
