"""Estimation: resources and cycles of a design before synthesis, checked against yosys.

- :func:`estimate` (``Graph`` or ``Design``, ``Device``) -> :class:`Estimate`: per-node
  LUT, FF, DSP, BRAM18, latency and II, and chain totals; a node without a model raises
  :class:`EstimateError`.
- :mod:`~pqflow.estimate.device`: device profiles (Zynq-7020, UltraScale+, iCE40).
- :mod:`~pqflow.estimate.models`: one model per (op class, style), a registry whose
  default raises; LUT/FF coefficients fitted by :mod:`~pqflow.estimate.calibrate`.
- :func:`cycles_on_data`: latency and II on real data (data-dependent sparse units).
- :func:`synthesize`: yosys ground truth (``synth_xilinx``/``synth_ice40``, ``stat -json``),
  cached by Verilog hash.
"""

from .core import (
    DataCycles,
    Estimate,
    EstimateError,
    NodeContext,
    NodeEstimate,
    cycles_on_data,
    estimate,
)
from .device import (
    DEVICES,
    ICE40_HX8K,
    ICE40_UP5K,
    XC7Z020,
    XCZU3EG,
    XCZU7EV,
    Device,
    Dsp,
    Ram,
    device,
)
from .yosys import YosysError, YosysNotFound, synthesize

__all__ = [
    "DEVICES",
    "DataCycles",
    "ICE40_HX8K",
    "ICE40_UP5K",
    "XC7Z020",
    "XCZU3EG",
    "XCZU7EV",
    "Device",
    "Dsp",
    "Estimate",
    "EstimateError",
    "NodeContext",
    "NodeEstimate",
    "Ram",
    "YosysError",
    "YosysNotFound",
    "cycles_on_data",
    "device",
    "estimate",
    "synthesize",
]
