"""Amaranth RTL: one streaming component per op, a dataflow top, deterministic Verilog.

Every component is a ``wiring.Component`` with ports ``i: In(stream.Signature(...))`` and
``o: Out(stream.Signature(...))`` whose payload is ``data.ArrayLayout(shape, n)`` (element
k at bits [k*w, (k+1)*w)), an integer ``latency`` in cycles and (matrix units)
``cycles_per_vector``; see ``common.py`` for the stall rule of pipelined units,
``top.py`` for the registries (``register_dense``) and ``verilog.py`` for the Verilog
ports. Every unit also has a ``schedule`` (``schedule.py``): an (H, W, C) tensor travels
as H * W one-pixel beats, through ``window.py`` (sliding windows, convolutions, the
Flatten deserializer) and ``pool.py``. Graphs that are not chains (residual networks)
are ``graph_top.DataflowGraphTop``s: ``fifo.StreamFork`` where a value has several
readers, ``add.AddUnit`` joins, and ``fifo.SkipFIFO``s sized from the schedules; fused
multi-node units register there (``register_fusion``).
"""

from ..design import (
    STYLES,
    Design,
    DesignError,
    Folded,
    HardwareError,
    Impl,
    Sparse,
    UnitOptions,
    Unrolled,
)
from .activation import MultiThresholdUnit, ReLUUnit
from .add import AddUnit
from .common import element_shape, vector_signature
from .dense import PRODUCTS, UnrolledDense
from .fifo import SkipFIFO, StreamFork
from .folded import FoldedDense
from .gated import GatedConvUnit  # importing it registers the gated-block fusion
from .graph_top import (
    DataflowGraphTop,
    Fusion,
    dataflow_top,
    hardware_graph,
    register_fusion,
)
from .pool import PoolUnit
from .requant import RequantUnit
from .sparse import SparseDense  # importing it registers the 'sparse' builder, if it has one
from .top import (
    DataflowTop,
    UnrolledOptions,
    dense_units,
    hardware_chain,
    matrix_unit,
    op_unit,
    register_dense,
)
from .verilog import VerilogDesign, generate_verilog
from .window import ConvUnit, Deserializer, WindowGenerator

__all__ = [
    "PRODUCTS",
    "STYLES",
    "AddUnit",
    "ConvUnit",
    "DataflowGraphTop",
    "DataflowTop",
    "Deserializer",
    "Design",
    "DesignError",
    "Folded",
    "FoldedDense",
    "Fusion",
    "GatedConvUnit",
    "HardwareError",
    "Impl",
    "MultiThresholdUnit",
    "PoolUnit",
    "ReLUUnit",
    "RequantUnit",
    "SkipFIFO",
    "Sparse",
    "SparseDense",
    "StreamFork",
    "UnitOptions",
    "Unrolled",
    "UnrolledDense",
    "UnrolledOptions",
    "VerilogDesign",
    "WindowGenerator",
    "dataflow_top",
    "dense_units",
    "element_shape",
    "generate_verilog",
    "hardware_chain",
    "hardware_graph",
    "matrix_unit",
    "op_unit",
    "register_dense",
    "register_fusion",
    "vector_signature",
]
