"""Amaranth RTL: one streaming component per op, a dataflow top, deterministic Verilog.

Every component is a ``wiring.Component`` with ports ``i: In(stream.Signature(...))`` and
``o: Out(stream.Signature(...))`` whose payload is ``data.ArrayLayout(shape, n)`` (element
k at bits [k*w, (k+1)*w)), and an integer ``latency`` in cycles; see ``common.py`` for
the stall rule and ``verilog.py`` for the Verilog ports.
"""

from .activation import MultiThresholdUnit, ReLUUnit
from .common import element_shape, vector_signature
from .dense import PRODUCTS, UnrolledDense
from .requant import RequantUnit
from .top import DataflowTop, UnrolledOptions, hardware_chain, unrolled_unit
from .verilog import STYLES, VerilogDesign, generate_verilog

__all__ = [
    "PRODUCTS",
    "STYLES",
    "DataflowTop",
    "MultiThresholdUnit",
    "ReLUUnit",
    "RequantUnit",
    "UnrolledDense",
    "UnrolledOptions",
    "VerilogDesign",
    "element_shape",
    "generate_verilog",
    "hardware_chain",
    "unrolled_unit",
    "vector_signature",
]
