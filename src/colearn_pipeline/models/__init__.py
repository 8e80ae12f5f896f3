"""The co-learning CNN, the TB / TC / FS baselines and the paper's loss (Sec. III-B to III-F).

Contract (docs/architecture.md, "Models"): :func:`build_model` ``(name, **kwargs)`` with ``name``
in :data:`MODEL_NAMES`; every net maps ``(N, 2, H, W)`` (CT, PET) to logits
``(N, num_classes, H, W)``; :func:`colearn_loss` is the total loss. See docs/models.md.
"""

from colearn_pipeline.models import loss
from colearn_pipeline.models.blocks import (
    CoLearningUnit,
    ConvNormAct,
    ConvSettings,
    Encoder,
    EncoderBlock,
    OutputHead,
    PixelIntermix,
    Reconstruction,
    ReconstructionBlock,
    TwoConv,
    standardise_per_slice,
)
from colearn_pipeline.models.loss import class_scaled_cross_entropy, colearn_loss, l2_penalty
from colearn_pipeline.models.nets import (
    DEFAULTS,
    ABLATION_NAMES,
    MODEL_NAMES,
    CoLearnNet,
    FusedInputNet,
    SegmentationNet,
    TwoBranchNet,
    TwoChannelNet,
    build_model,
    count_parameters,
    predict_proba,
    to_channels_last,
)

__all__ = [
    "DEFAULTS",
    "ABLATION_NAMES",
    "MODEL_NAMES",
    "CoLearnNet",
    "CoLearningUnit",
    "ConvNormAct",
    "ConvSettings",
    "Encoder",
    "EncoderBlock",
    "FusedInputNet",
    "OutputHead",
    "PixelIntermix",
    "Reconstruction",
    "ReconstructionBlock",
    "SegmentationNet",
    "TwoBranchNet",
    "TwoChannelNet",
    "TwoConv",
    "build_model",
    "class_scaled_cross_entropy",
    "colearn_loss",
    "count_parameters",
    "l2_penalty",
    "loss",
    "predict_proba",
    "standardise_per_slice",
    "to_channels_last",
]
