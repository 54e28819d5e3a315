"""hls4ml interop: a fixed-point pqflow MLP graph as an hls4ml model, every type explicit.

The supported subset is the fixed-point MLP that ``pqflow.models.lower_mlp`` emits::

    Quantize -> (Dense -> [ReLU] -> [Requant])* -> Dense [-> Dequantize]

with power-of-two ``Requant`` s (``mult = 2**k``, value-preserving: ``to.frac = x.frac +
k - shift``). It becomes a float64 ``nn.Sequential`` of ``Linear``/``ReLU`` whose weights
are the raws' exact values, converted with ``hls4ml.converters.convert_from_pytorch_model``
and a ``config_from_pytorch_model(backend='Vitis', granularity='name')`` in which *every*
precision is set (hls4ml's defaults wrap and truncate, and its automatic accumulator
types differ per backend):

- input layer: the ``Quantize`` type with its rounding and overflow (``ap_fixed(double)``
  conversion applies them);
- each Linear: weight, bias and accum from the IR (accum = the IR's exact accumulator
  type, so products and sums never round or wrap); result = the accumulator, or the
  ``Requant`` type and modes when a Requant follows directly;
- each ReLU: result = the following ``Requant`` 's type with its modes (ReLU then
  round/saturate on assignment, which is ReLU -> Requant), else the IR's ReLU type.

Rounding maps one to one (floor -> TRN, half_up -> RND, half_even -> RND_CONV; saturate ->
SAT, wrap -> WRAP). Outside the subset (integer ``mult`` scales, thresholds, binary layers,
convolutions) ``export_hls4ml`` raises ``HardwareError`` naming the node: those need the
pqflow HLS emitter (``pqflow.hwgen.hls``). Needs the ``hls`` extra (hls4ml) and torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ir import Dense, Fixed, Graph, Overflow, Quantize, ReLU, Requant, Rounding
from .design import HardwareError
from .hls.emit import hls_boundary

__all__ = ["HLS4MLExport", "export_hls4ml", "hls4ml_precision", "mlp_layers", "torch_mlp"]

_ROUND = {Rounding.FLOOR: "TRN", Rounding.HALF_UP: "RND", Rounding.HALF_EVEN: "RND_CONV"}
_OVF = {Overflow.SATURATE: "SAT", Overflow.WRAP: "WRAP"}


def hls4ml_precision(
    t: Fixed, rounding: Rounding = Rounding.FLOOR, overflow: Overflow = Overflow.WRAP
) -> str:
    """hls4ml's spelling of ``t`` (value = raw * 2**-frac) with these modes."""
    kind = "fixed" if t.signed else "ufixed"
    return f"{kind}<{t.width},{t.width - t.frac},{_ROUND[rounding]},{_OVF[overflow]}>"


@dataclass(frozen=True)
class MLPLayer:
    """One Dense of the subset with what follows it."""

    dense: str
    weight: np.ndarray  # (out, in) raws
    w_type: Fixed
    bias: np.ndarray | None
    b_type: Fixed | None
    acc: Fixed
    relu: Fixed | None  # the ReLU's output type, when there is one
    requant: Requant | None


def _requant_ok(node, x: Fixed) -> Requant:
    op: Requant = node.op
    if len(op.mult) != 1 or len(op.shift) != 1:
        raise HardwareError(f"{node.describe()}: per-channel requant is outside the hls4ml subset")
    m, s = op.mult[0], op.shift[0]
    k = m.bit_length() - 1
    if m <= 0 or m != 1 << k or op.to.frac != x.frac + k - s:
        raise HardwareError(
            f"{node.describe()}: only value-preserving power-of-two requants (mult = 2**k, "
            f"to.frac = x.frac + k - shift) map to hls4ml types; got mult {m}, shift {s}, "
            f"{x} -> {op.to}"
        )
    return op


def mlp_layers(graph: Graph) -> tuple[Quantize, list[MLPLayer]]:
    """The leading Quantize and the Dense layers of a graph in the hls4ml subset."""
    src, nodes, _ = hls_boundary(graph)
    first = graph.node(src) if src != graph.inputs[0].name else None
    if first is None or not isinstance(first.op, Quantize):
        raise HardwareError(f"graph '{graph.name}': the hls4ml export needs a leading Quantize")
    types = graph.types()
    layers: list[MLPLayer] = []
    i = 0
    while i < len(nodes):
        n = nodes[i]
        if not isinstance(n.op, Dense):
            raise HardwareError(
                f"{n.describe()}: {type(n.op).__name__} is outside the hls4ml subset "
                "(Dense -> [ReLU] -> [Requant] chains); use pqflow.hwgen.hls"
            )
        op: Dense = n.op
        relu = requant = None
        i += 1
        if i < len(nodes) and isinstance(nodes[i].op, ReLU):
            relu = types[nodes[i].name].dtype
            i += 1
        if i < len(nodes) and isinstance(nodes[i].op, Requant):
            requant = _requant_ok(nodes[i], types[nodes[i].inputs[0]].dtype)
            i += 1
        layers.append(
            MLPLayer(
                n.name,
                op.weight.data,
                op.weight.dtype,
                None if op.bias is None else op.bias.data,
                None if op.bias is None else op.bias.dtype,
                types[n.name].dtype,
                relu,
                requant,
            )
        )
    return first.op, layers


def torch_mlp(graph: Graph):
    """The float64 ``nn.Sequential`` of Linear/ReLU whose parameters are the raws' values."""
    import torch
    from torch import nn

    _, layers = mlp_layers(graph)
    mods = []
    for ly in layers:
        n_out, n_in = ly.weight.shape
        lin = nn.Linear(n_in, n_out, bias=ly.bias is not None).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(ly.weight * 2.0**-ly.w_type.frac))
            if ly.bias is not None:
                lin.bias.copy_(torch.from_numpy(ly.bias * 2.0**-ly.b_type.frac))
        mods.append(lin)
        if ly.relu is not None:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).double().eval()


@dataclass
class HLS4MLExport:
    """An hls4ml model of a pqflow graph and the precisions set on it, by hls4ml layer."""

    model: object  # hls4ml ModelGraph
    config: dict
    out_frac: int  # frac of the output (the last accumulator)
    precisions: dict[str, dict[str, str]]

    def compile(self) -> None:
        self.model.compile()

    def predict_raws(self, x: np.ndarray) -> np.ndarray:
        """hls4ml's ``predict`` on float64 inputs, as output raws (checked to be integers)."""
        y = np.asarray(self.model.predict(np.ascontiguousarray(x, dtype=np.float64)))
        y = y.reshape(len(x), -1).astype(np.float64)
        r = y * 2.0**self.out_frac
        if not np.array_equal(r, np.round(r)):
            raise AssertionError("hls4ml outputs are not on the output type's grid")
        return r.astype(np.int64)


def export_hls4ml(
    graph: Graph,
    output_dir: str | Path,
    *,
    reuse_factor: int = 1,
    strategy: str = "Latency",
    backend: str = "Vitis",
    io_type: str = "io_parallel",
    project_name: str = "pqflow_mlp",
    part: str = "xcu250-figd2104-2L-e",
) -> HLS4MLExport:
    """The hls4ml model of an MLP graph in the supported subset, every precision explicit.

    ``reuse_factor`` and ``strategy`` (``"Latency"`` or ``"Resource"``) go on every
    layer. Call ``compile()`` then ``predict_raws(x)`` (float64 inputs) to compare with
    the oracle's output raws. Raises ``HardwareError`` for a graph outside the subset.
    """
    import hls4ml

    quant, layers = mlp_layers(graph)
    model = torch_mlp(graph)
    n_in = layers[0].weight.shape[1]
    cfg = hls4ml.utils.config_from_pytorch_model(
        model,
        input_shape=(n_in,),
        backend=backend,
        granularity="name",
        default_precision="fixed<32,16,TRN,WRAP>",
        default_reuse_factor=reuse_factor,
    )
    cfg["Model"]["Strategy"] = strategy
    cfg["Model"]["ReuseFactor"] = reuse_factor
    names = list(cfg["LayerName"])  # input, then one entry per torch module, in order
    precisions: dict[str, dict[str, str]] = {
        names[0]: {"result": hls4ml_precision(quant.to, quant.rounding, quant.overflow)}
    }
    k = 1
    for ly in layers:
        p = {
            "weight": hls4ml_precision(ly.w_type),
            "bias": hls4ml_precision(ly.b_type if ly.b_type is not None else ly.acc),
            "accum": hls4ml_precision(ly.acc),
            "result": hls4ml_precision(ly.acc),
        }
        if ly.relu is None and ly.requant is not None:
            r = ly.requant
            p["result"] = hls4ml_precision(r.to, r.rounding, r.overflow)
        precisions[names[k]] = p
        k += 1
        if ly.relu is not None:
            if ly.requant is not None:
                r = ly.requant
                precisions[names[k]] = {"result": hls4ml_precision(r.to, r.rounding, r.overflow)}
            else:
                precisions[names[k]] = {"result": hls4ml_precision(ly.relu)}
            k += 1
    if k != len(names):
        raise HardwareError(
            f"graph '{graph.name}': hls4ml made layers {names}, expected {k} for this MLP"
        )
    for name, p in precisions.items():
        entry = cfg["LayerName"][name]
        entry["Precision"] = {**entry.get("Precision", {}), **p}
        entry["ReuseFactor"] = reuse_factor
        entry["Strategy"] = strategy
    hmodel = hls4ml.converters.convert_from_pytorch_model(
        model,
        hls_config=cfg,
        output_dir=str(output_dir),
        project_name=project_name,
        backend=backend,
        io_type=io_type,
        part=part,
    )
    _, _, dst = hls_boundary(graph)
    return HLS4MLExport(hmodel, cfg, graph.types()[dst].dtype.frac, precisions)
