"""FPGA device profiles: the geometry every resource model reads (never hard-coded in a model).

A ``Device`` names its family (the yosys flow that is its ground truth: ``synth_xilinx``
or ``synth_ice40``), its logic cell (LUT inputs), its hard multiplier (operand widths
and the minimum widths under which yosys keeps a product in logic), its block RAM and
the counts of each, so an estimate can be read as a fraction of the part.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEVICES",
    "ICE40_HX8K",
    "ICE40_UP5K",
    "XC7Z020",
    "XCZU3EG",
    "XCZU7EV",
    "Device",
    "Dsp",
    "Ram",
    "device",
]


@dataclass(frozen=True)
class Dsp:
    """A hard multiplier block.

    ``a_width`` x ``b_width`` are its multiplier port widths (two's complement when
    ``signed_only``: an unsigned operand then needs one more bit). yosys's ``mul2dsp``
    keeps a product in LUTs when an operand is narrower than ``a_min``/``b_min`` or the
    product narrower than ``y_min``, and splits a wider one over several blocks.
    """

    name: str
    a_width: int
    b_width: int
    signed_only: bool
    a_min: int = 2
    b_min: int = 2
    y_min: int = 9
    yosys_option: str = ""
    """The option the yosys script needs to infer it (``-dsp`` for iCE40), if any."""


@dataclass(frozen=True)
class Ram:
    """A block RAM primitive: ``bits`` of storage, its widest port ``max_width``."""

    name: str
    bits: int
    max_width: int


@dataclass(frozen=True)
class Device:
    """An FPGA part: its family (yosys flow), logic cell, DSP and RAM geometry and counts."""

    name: str
    family: str
    """``xilinx`` or ``ice40``: the yosys ``synth_<family>`` flow that is its ground truth."""
    lut_inputs: int
    luts: int
    ffs: int
    dsp: Dsp | None
    dsps: int
    bram: Ram | None
    brams: int
    """Block RAMs in units of ``bram`` (BRAM18 on Xilinx, 4 Kbit EBR on iCE40)."""
    uram: Ram | None = None
    urams: int = 0
    carry_chain: bool = True
    """Adders use a dedicated carry chain (CARRY4/CARRY8, SB_CARRY): one LUT per bit."""
    yosys_arch: str = ""
    """The ``-family``/``-device`` option of ``synth_xilinx``/``synth_ice40`` for this part."""

    def __post_init__(self) -> None:
        if self.family not in ("xilinx", "ice40"):
            raise ValueError(f"Device {self.name}: family must be 'xilinx' or 'ice40'")
        if self.lut_inputs < 2:
            raise ValueError(f"Device {self.name}: lut_inputs must be >= 2")

    def capacity(self) -> dict[str, int]:
        """The part's resources under the names an ``Estimate`` uses."""
        return {
            "lut": self.luts,
            "ff": self.ffs,
            "dsp": self.dsps,
            "bram": self.brams,
            "uram": self.urams,
        }


XC7Z020 = Device(
    name="xc7z020",
    family="xilinx",
    lut_inputs=6,
    luts=53_200,
    ffs=106_400,
    dsp=Dsp("DSP48E1", a_width=25, b_width=18, signed_only=True, y_min=9),
    dsps=220,
    bram=Ram("RAMB18E1", bits=18 * 1024, max_width=36),
    brams=280,
    yosys_arch="xc7",
)
"""Zynq-7020 (7-series): LUT6, DSP48E1 (25x18), 140 BRAM36 = 280 BRAM18."""

XCZU3EG = Device(
    name="xczu3eg",
    family="xilinx",
    lut_inputs=6,
    luts=70_560,
    ffs=141_120,
    dsp=Dsp("DSP48E2", a_width=27, b_width=18, signed_only=True, y_min=9),
    dsps=360,
    bram=Ram("RAMB18E2", bits=18 * 1024, max_width=36),
    brams=432,
    uram=Ram("URAM288", bits=288 * 1024, max_width=72),
    urams=0,
    yosys_arch="xcup",
)
"""Zynq UltraScale+ ZU3EG: LUT6, DSP48E2 (27x18), 216 BRAM36 = 432 BRAM18, no URAM
(the ZU4EV and up carry URAM288; ``XCZU7EV`` below)."""

XCZU7EV = Device(
    name="xczu7ev",
    family="xilinx",
    lut_inputs=6,
    luts=230_400,
    ffs=460_800,
    dsp=Dsp("DSP48E2", a_width=27, b_width=18, signed_only=True, y_min=9),
    dsps=1_728,
    bram=Ram("RAMB18E2", bits=18 * 1024, max_width=36),
    brams=624,
    uram=Ram("URAM288", bits=288 * 1024, max_width=72),
    urams=96,
    yosys_arch="xcup",
)
"""Zynq UltraScale+ ZU7EV: DSP48E2, 312 BRAM36 = 624 BRAM18, 96 URAM288."""

ICE40_UP5K = Device(
    name="ice40up5k",
    family="ice40",
    lut_inputs=4,
    luts=5_280,
    ffs=5_280,
    dsp=Dsp("SB_MAC16", a_width=16, b_width=16, signed_only=False, y_min=11, yosys_option="-dsp"),
    dsps=8,
    bram=Ram("SB_RAM40_4K", bits=4096, max_width=16),
    brams=30,
    yosys_arch="u",
)
"""iCE40 UltraPlus 5K: LUT4, 8 SB_MAC16 (16x16), 30 EBR of 4 Kbit (plus SPRAM, not modelled)."""

ICE40_HX8K = Device(
    name="ice40hx8k",
    family="ice40",
    lut_inputs=4,
    luts=7_680,
    ffs=7_680,
    dsp=None,
    dsps=0,
    bram=Ram("SB_RAM40_4K", bits=4096, max_width=16),
    brams=32,
    yosys_arch="hx",
)
"""iCE40 HX8K: LUT4, no DSP, 32 EBR of 4 Kbit."""

DEVICES: dict[str, Device] = {
    d.name: d for d in (XC7Z020, XCZU3EG, XCZU7EV, ICE40_UP5K, ICE40_HX8K)
}
"""Known devices by name."""


def device(name: str | Device) -> Device:
    """The ``Device`` called ``name`` (a Device passes through); ValueError naming the known."""
    if isinstance(name, Device):
        return name
    try:
        return DEVICES[name]
    except KeyError:
        raise ValueError(
            f"unknown device {name!r}; known devices: {', '.join(sorted(DEVICES))}"
        ) from None
