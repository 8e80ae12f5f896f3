"""Metrics, t-tests, Table II and figures (see docs/train_eval.md, "Evaluation")."""

from colearn_pipeline.evaluation.figures import (
    first_fusion_map,
    fusion_map_grid,
    segmentation_panels,
    select_slices,
    training_curves,
)
from colearn_pipeline.evaluation.metrics import (
    METRICS,
    ROI_NAMES,
    confusion_counts,
    metrics_from_counts,
    predict_labels,
    slice_metrics,
)
from colearn_pipeline.evaluation.tables import (
    NET_LABELS,
    ROI_ORDER,
    flat_metrics,
    format_table_ii,
    summarise,
    table_ii_markdown,
)

__all__ = [
    "METRICS",
    "NET_LABELS",
    "ROI_NAMES",
    "ROI_ORDER",
    "confusion_counts",
    "first_fusion_map",
    "flat_metrics",
    "format_table_ii",
    "fusion_map_grid",
    "metrics_from_counts",
    "predict_labels",
    "segmentation_panels",
    "select_slices",
    "slice_metrics",
    "summarise",
    "table_ii_markdown",
    "training_curves",
]
