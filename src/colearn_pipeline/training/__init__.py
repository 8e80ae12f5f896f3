"""Data loading, augmentation, the training loop, checkpoints and DDP (see docs/train_eval.md)."""

from colearn_pipeline.training.checkpoint import atomic_torch_save, list_checkpoints
from colearn_pipeline.training.data import assemble_slices, augment_batch, epoch_order, standardise_slices
from colearn_pipeline.training.loop import (
    MODEL_FORMAT,
    TrainConfig,
    TrainingInterrupted,
    evaluate_loss_accuracy,
    load_model,
    resolve_device,
    train_model,
)
from colearn_pipeline.training.split import check_split, make_split

__all__ = [
    "MODEL_FORMAT",
    "TrainConfig",
    "TrainingInterrupted",
    "assemble_slices",
    "atomic_torch_save",
    "augment_batch",
    "check_split",
    "epoch_order",
    "evaluate_loss_accuracy",
    "list_checkpoints",
    "load_model",
    "make_split",
    "resolve_device",
    "standardise_slices",
    "train_model",
]
