"""Metrics, study-level statistics, Table II and figures (see docs/train_eval.md, "Evaluation")."""

from colearn_pipeline.evaluation.answers import PowerTarget, answers_markdown
from colearn_pipeline.evaluation.comparison import (
    ComparisonSettings,
    study_level_table,
    study_means,
    study_table_markdown,
)
from colearn_pipeline.evaluation.statistics import (
    bootstrap_mean_ci,
    holm_adjust,
    paired_t_n_for_power,
    paired_t_power,
    paired_t_pvalues,
    slice_two_sample_t_pvalue,
    t_mean_ci,
    wilcoxon_pvalues,
)
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
    overall_from_rois,
    predict_labels,
    scored_slice_mask,
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
    "ComparisonSettings",
    "PowerTarget",
    "answers_markdown",
    "bootstrap_mean_ci",
    "holm_adjust",
    "paired_t_n_for_power",
    "paired_t_power",
    "slice_two_sample_t_pvalue",
    "t_mean_ci",
    "overall_from_rois",
    "paired_t_pvalues",
    "scored_slice_mask",
    "study_level_table",
    "study_means",
    "study_table_markdown",
    "wilcoxon_pvalues",
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
