"""HLS C++ for Vitis HLS from the IR: Jinja templates, one per op, and the emitter.

``generate_hls(graph_or_design, style, out_dir)`` renders a project (top function,
weights as constants, ``ap_int``/``ap_fixed`` types from the numeric contract, pragmas
from the style, a test bench reading the oracle's vectors and ``run_hls.tcl``);
``pqflow.sim.csim.csim`` compiles it with g++ against the open ap_types headers and
checks it bit for bit against the oracle. See ``emit.py`` for the numeric mapping.
"""

from .emit import (
    HLS_OPS,
    OVERFLOW_MODES,
    ROUNDING_MODES,
    HLSProject,
    generate_hls,
    hls_boundary,
    render_hls,
)

__all__ = [
    "HLS_OPS",
    "OVERFLOW_MODES",
    "ROUNDING_MODES",
    "HLSProject",
    "generate_hls",
    "hls_boundary",
    "render_hls",
]
