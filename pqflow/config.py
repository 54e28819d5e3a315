"""Flow configuration: a TOML file read into frozen dataclasses, every key checked.

Example (``examples/digits_mlp.toml``)::

    [model]
    name = "mlp"          # a model of pqflow.models.zoo
    dataset = "digits"

    [train]
    epochs = 40
    seed = 0

    [compress]
    weight_bits = 8       # fixed point
    act_bits = 8
    sparsity = 0.0        # pruning amount before quantization (0 = none)
    granularity = "element"   # element, kernel, channel, filter or nm
    criterion = "l1"      # l1, l2, taylor or random
    quant = "ptq"         # ptq, qat, ternary or binary
    scale = "pow2"        # pow2 (shifts, bit-exact with torch) or float (mult + shift)
    qat_epochs = 10

    [hardware]
    style = "unrolled"    # unrolled, folded (pe, simd) or sparse (pe)
    axis = false          # AXI-Stream ports on the top

    [verify]
    simulator = "verilator"   # or "icarus"
    vectors = 0               # 0 = the whole test split
    stall_prob = 0.3
    backpressure_prob = 0.3

    [hls]
    enabled = true        # the Vitis HLS project under hls/
    csim = true           # g++ C simulation against the oracle
    vectors = 0

    [estimate]
    device = "xc7z020"    # see pqflow.estimate.DEVICES
    yosys = false         # also synthesise with yosys and compare

    [report]
    enabled = true        # report.html, report.md, report.json

``model.name`` is one of ``mlp``, ``cnn``, ``resnet_tiny``, ``gated_cnn``. For the
``mlp`` with ``quant = "ptq"``, ``scale = "pow2"`` and global L1 ``element`` pruning the
flow uses ``quantize_mlp`` (the first slice's recipe); every other combination goes
through ``quantize_model``/``qat`` and the torch.fx lowering.

Unknown sections or keys, and values of the wrong type or range, are errors that name
the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import UserError


class ConfigError(UserError):
    """A flow configuration that cannot be used."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    dataset: str = "digits"

    def check(self) -> None:
        if self.dataset != "digits":
            raise ConfigError(f"[model] dataset: '{self.dataset}' is not known (known: digits)")
        if self.name not in self.NAMES:
            raise ConfigError(
                f"[model] name: '{self.name}' is not a zoo model the flow builds "
                f"({', '.join(self.NAMES)})"
            )

    NAMES = ("mlp", "cnn", "resnet_tiny", "gated_cnn")

    @property
    def image(self) -> bool:
        """Whether the model takes (N, 8, 8, 1) images rather than flat rows."""
        return self.name != "mlp"


@dataclass(frozen=True)
class TrainSection:
    epochs: int = 40
    seed: int = 0
    finetune_epochs: int = 20

    def check(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"[train] epochs must be at least 1, not {self.epochs}")
        if self.finetune_epochs < 0:
            raise ConfigError(f"[train] finetune_epochs must be >= 0, not {self.finetune_epochs}")


@dataclass(frozen=True)
class CompressConfig:
    weight_bits: int = 8
    act_bits: int = 8
    sparsity: float = 0.0
    granularity: str = "element"  # pruning: element, kernel, channel, filter, nm
    criterion: str = "l1"  # pruning: l1, l2, taylor, random
    quant: str = "ptq"  # ptq, qat, ternary (weights), binary (weights and activations)
    scale: str = "pow2"  # pow2 (bit-exact shifts) or float (per-channel mult + shift)
    qat_epochs: int = 10

    QUANT = ("ptq", "qat", "ternary", "binary")
    GRANULARITIES = ("element", "kernel", "channel", "filter", "nm")
    CRITERIA = ("l1", "l2", "taylor", "random")

    def check(self) -> None:
        for k in ("weight_bits", "act_bits"):
            v = getattr(self, k)
            if not 2 <= v <= 16:
                raise ConfigError(f"[compress] {k} must be from 2 to 16, not {v}")
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"[compress] sparsity must be in [0, 1), not {self.sparsity}")
        for k, known in (
            ("quant", self.QUANT),
            ("granularity", self.GRANULARITIES),
            ("criterion", self.CRITERIA),
            ("scale", ("pow2", "float")),
        ):
            if getattr(self, k) not in known:
                raise ConfigError(
                    f"[compress] {k}: '{getattr(self, k)}' is not known ({', '.join(known)})"
                )
        if self.qat_epochs < 1:
            raise ConfigError(f"[compress] qat_epochs must be at least 1, not {self.qat_epochs}")

    @property
    def legacy_mlp(self) -> bool:
        """The MLP recipe of the first slice: global L1 element pruning, then w/a PTQ with
        power-of-two scales by ``quantize_mlp`` (which also gives the torch integer codes)."""
        return (
            self.quant == "ptq"
            and self.scale == "pow2"
            and self.granularity == "element"
            and self.criterion == "l1"
        )


@dataclass(frozen=True)
class HardwareConfig:
    style: str = "unrolled"  # unrolled, folded or sparse (every Dense layer)
    pe: int = 1  # folded and sparse: processing elements (at most; fitted per layer)
    simd: int = 1  # folded: input lanes per PE (at most; fitted per layer)
    top: str = "pqflow_top"
    axis: bool = False  # AXI-Stream port names (tdata/tvalid/tready) on the top

    STYLES = ("unrolled", "folded", "sparse")

    def check(self) -> None:
        if self.style not in self.STYLES:
            raise ConfigError(
                f"[hardware] style: '{self.style}' is not known ({', '.join(self.STYLES)})"
            )
        if self.pe < 1 or self.simd < 1:
            raise ConfigError(f"[hardware] pe and simd must be >= 1, not {self.pe}, {self.simd}")
        if not self.top.isidentifier():
            raise ConfigError(f"[hardware] top: '{self.top}' is not a Verilog identifier")

    def impl_options(self) -> dict:
        """The options of the style's implementation (see ``pqflow.hwgen.Design.uniform``)."""
        return {"folded": {"pe": self.pe, "simd": self.simd}, "sparse": {"pe": self.pe}}.get(
            self.style, {}
        )


@dataclass(frozen=True)
class VerifyConfig:
    simulator: str = "verilator"
    vectors: int = 0
    stall_prob: float = 0.3
    backpressure_prob: float = 0.3
    seed: int = 0
    enabled: bool = True

    def check(self) -> None:
        if self.simulator not in ("verilator", "icarus"):
            raise ConfigError(
                f"[verify] simulator: '{self.simulator}' is not known (verilator or icarus)"
            )
        if self.vectors < 0:
            raise ConfigError(f"[verify] vectors must be >= 0 (0 = all), not {self.vectors}")
        for k in ("stall_prob", "backpressure_prob"):
            v = getattr(self, k)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"[verify] {k} must be in [0, 1), not {v}")


@dataclass(frozen=True)
class HLSConfig:
    enabled: bool = True  # write the Vitis HLS project (hls/)
    csim: bool = True  # compile it with g++ and C-simulate it against the oracle
    vectors: int = 0  # test images for the C simulation; 0 = all

    def check(self) -> None:
        if self.vectors < 0:
            raise ConfigError(f"[hls] vectors must be >= 0 (0 = all), not {self.vectors}")


@dataclass(frozen=True)
class EstimateConfig:
    enabled: bool = True
    device: str = "xc7z020"
    yosys: bool = False  # also synthesise the Verilog with yosys and compare

    def check(self) -> None:
        from .estimate.device import DEVICES

        if self.device not in DEVICES:
            raise ConfigError(
                f"[estimate] device: '{self.device}' is not known ({', '.join(sorted(DEVICES))})"
            )


@dataclass(frozen=True)
class ReportConfig:
    enabled: bool = True  # report.html, report.md and report.json

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class FlowConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainSection = field(default_factory=TrainSection)
    compress: CompressConfig = field(default_factory=CompressConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    hls: HLSConfig = field(default_factory=HLSConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def check(self) -> FlowConfig:
        for f in fields(self):
            getattr(self, f.name).check()
        return self


def _section(cls, name: str, raw: object):
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        if k not in known:
            raise ConfigError(f"[{name}] {k}: unknown key (known: {', '.join(known)})")
        default = getattr(cls(), k)
        want = type(default)
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if type(v) is not want:
            raise ConfigError(
                f"[{name}] {k}: expected {want.__name__}, got {type(v).__name__} {v!r}"
            )
        kwargs[k] = v
    return cls(**kwargs)


def parse_sections(top_cls, doc: dict):
    """``top_cls`` (a dataclass of section dataclasses, each with defaults and ``check``)
    from a parsed TOML document, every section and key checked; ConfigError names it."""
    sections = {f.name: f for f in fields(top_cls)}
    kwargs = {}
    for name, raw in doc.items():
        if name not in sections:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(sections)})")
        kwargs[name] = _section(sections[name].default_factory, name, raw)
    return top_cls(**kwargs).check()


def parse_config(doc: dict) -> FlowConfig:
    return parse_sections(FlowConfig, doc)


def load_toml(path: str | Path, parse, what: str = "config"):
    """Read a TOML file and ``parse`` its document; ConfigError names the file and key."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such {what} file") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a folder, not a {what} file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    try:
        return parse(doc)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def load_config(path: str | Path) -> FlowConfig:
    """Read and check a flow TOML file; ConfigError names the file and the key."""
    return load_toml(path, parse_config)
