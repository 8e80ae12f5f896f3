"""Network inputs, augmentation, the training loop, checkpoints and DDP (see docs/train_eval.md)."""

from colearn_pipeline.training.checkpoint import atomic_torch_save, list_checkpoints
from colearn_pipeline.training.config import TrainConfig, resolve_device
from colearn_pipeline.training.data import assemble_slices, augment_batch, epoch_order
from colearn_pipeline.training.inputs import network_input, resize_labels_nearest, standardise_slices
from colearn_pipeline.training.loop import (
    MODEL_FORMAT,
    TrainingInterrupted,
    TrainingRun,
    evaluate_loss_accuracy,
    load_model,
    run_training,
    train_model,
)
from colearn_pipeline.training.split import check_split, make_split

__all__ = [
    "MODEL_FORMAT",
    "TrainConfig",
    "TrainingInterrupted",
    "TrainingRun",
    "assemble_slices",
    "atomic_torch_save",
    "augment_batch",
    "check_split",
    "epoch_order",
    "evaluate_loss_accuracy",
    "list_checkpoints",
    "load_model",
    "make_split",
    "network_input",
    "resize_labels_nearest",
    "resolve_device",
    "run_training",
    "standardise_slices",
    "train_model",
]
