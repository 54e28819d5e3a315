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
    "ChannelGate",
    "FINETUNE",
    "GatedConvBlock",
    "MODELS",
    "QAT",
    "QuantAct",
    "QuantConfig",
    "QuantConv2d",
    "QuantLayer",
    "QuantLinear",
    "QuantSpec",
    "QuantizedMLP",
    "Quantizer",
    "Sensitivity",
    "Split",
    "ThresholdReLU",
    "TrainConfig",
    "activation_sparsity",
    "build",
    "channel_gates",
    "choose_bits",
    "cnn",
    "evaluate",
    "fold_batchnorm",
    "gate_convs",
    "gated_cnn",
    "gradual_prune",
    "load_digits_split",
    "lower",
    "lower_mlp",
    "mixed_config",
    "mlp",
    "parameter_count",
    "polynomial_schedule",
    "predict",
    "prune_and_finetune",
    "prune_global_l1",
    "quant_layers",
    "quantize_mlp",
    "quantize_model",
    "resnet_tiny",
    "sensitivity",
    "shrink",
    "skipped_work",
    "sparsify",
    "sparsity_of",
    "sparsity_report",
    "train",
    "train_or_load",
    "weight_bits",
]
