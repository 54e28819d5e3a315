"""Datasets, the model zoo, training, pruning, quantization and torch -> IR lowering.

Everything here depends on torch; nothing here knows about hardware.
"""

from .bnfold import fold_batchnorm
from .calibrate import METHODS as CALIBRATION_METHODS
from .data import Split, load_digits_split
from .dynamic import (
    ChannelGate,
    GatedConvBlock,
    ThresholdReLU,
    activation_sparsity,
    channel_gates,
    gate_convs,
    gated_cnn,
    skipped_work,
    sparsify,
)
from .lower import lower, lower_mlp
from .mixed import Sensitivity, choose_bits, mixed_config, sensitivity
from .prune import (  # the function ``prune`` stays in its module: it would shadow it here
    gradual_prune,
    parameter_count,
    polynomial_schedule,
    shrink,
    sparsity_report,
)
from .qat import QAT  # ``qat``/``calibrate`` stay in their modules (same names as the modules)
from .qmodules import (
    QuantAct,
    QuantConfig,
    QuantConv2d,
    QuantLinear,
    quant_layers,
    quantize_model,
    weight_bits,
)
from .quant import (
    QuantizedMLP,
    QuantLayer,
    prune_and_finetune,
    prune_global_l1,
    quantize_mlp,
    sparsity_of,
)
from .quantizers import Quantizer, QuantSpec
from .train import FINETUNE, TrainConfig, evaluate, predict, train, train_or_load
from .zoo import MODELS, build, cnn, mlp, resnet_tiny

__all__ = [
    "CALIBRATION_METHODS",
    "QAT",
    "QuantAct",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "QuantSpec",
    "Quantizer",
    "Sensitivity",
    "choose_bits",
    "fold_batchnorm",
    "mixed_config",
    "quant_layers",
    "quantize_model",
    "sensitivity",
    "weight_bits",
    "ChannelGate",
    "GatedConvBlock",
    "ThresholdReLU",
    "activation_sparsity",
    "channel_gates",
    "gate_convs",
    "gated_cnn",
    "skipped_work",
    "sparsify",
    "FINETUNE",
    "MODELS",
    "QuantLayer",
    "QuantizedMLP",
    "Split",
    "TrainConfig",
    "build",
    "cnn",
    "evaluate",
    "gradual_prune",
    "load_digits_split",
    "lower",
    "lower_mlp",
    "mlp",
    "parameter_count",
    "polynomial_schedule",
    "predict",
    "prune_and_finetune",
    "prune_global_l1",
    "quantize_mlp",
    "resnet_tiny",
    "shrink",
    "sparsity_of",
    "sparsity_report",
    "train",
    "train_or_load",
]
