"""Hardware generators: ``amaranth/`` (RTL components, dataflow top, Verilog).

``Design`` (a graph + per-node implementation: ``Unrolled``, ``Folded``, ``Sparse``) and
the hardware errors need no Amaranth; ``generate_verilog`` and ``VerilogDesign`` are
imported lazily so that ``import pqflow.hwgen`` needs no Amaranth either.
"""

from __future__ import annotations

from .design import (
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

__all__ = [
    "STYLES",
    "Design",
    "DesignError",
    "Folded",
    "HardwareError",
    "Impl",
    "Sparse",
    "UnitOptions",
    "Unrolled",
    "VerilogDesign",
    "generate_verilog",
]

_LAZY = ("VerilogDesign", "generate_verilog")


def __getattr__(name: str):
    if name in _LAZY:
        from .amaranth import verilog

        return getattr(verilog, name)
    raise AttributeError(f"module 'pqflow.hwgen' has no attribute {name!r}")
