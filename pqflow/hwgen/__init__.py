"""Hardware generators: ``amaranth/`` (RTL components, dataflow top, Verilog).

``generate_verilog`` is imported lazily so that ``import pqflow.hwgen`` needs no Amaranth.
"""

from __future__ import annotations

__all__ = ["VerilogDesign", "generate_verilog"]


def __getattr__(name: str):
    if name in __all__:
        from .amaranth import verilog

        return getattr(verilog, name)
    raise AttributeError(f"module 'pqflow.hwgen' has no attribute {name!r}")
