"""Wiring of ``train_eval``: split -> slices -> per-net namespaces (train and evaluate every seed
and partition, curves) -> per-slice metrics -> Table II (study-level), the paper-protocol table,
the ablation table, the lesion-level metrics and their table, the answers, Fig. 5, Fig. 6, report.

Each net's nodes live in the namespace of its name (``colearn.train_evaluate``, ...), so
Kedro-Viz shows parallel node sets and ``kedro run --namespaces=tb`` runs one.
"""

from __future__ import annotations

import warnings
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.train_eval import nodes

#: The four nets of Table II, in the paper's order, then the ablation nets (kept here so the
#: pipeline structure is static).
TABLE_II_NETS: tuple[str, ...] = ("colearn", "tb", "tc", "fs")
ABLATION_NETS: tuple[str, ...] = ("tb_skips", "tb_skips_conv")
NETS: tuple[str, ...] = TABLE_II_NETS + ABLATION_NETS


def _bind(func, **kwargs):
    """``functools.partial`` that keeps the function's name and docstring (for Kedro-Viz)."""
    return update_wrapper(partial(func, **kwargs), func)


def split_pipeline() -> Pipeline:
    """The split node and the slices of every study (shared with ``validate``)."""
    return Pipeline(
        [
            Node(nodes.split_studies, ["model_input", "params:split"], "split", name="split_studies"),
            Node(_bind(nodes.assemble_set, which="all"), ["model_input", "split"], "all_slices",
                 name="assemble_all_slices"),
            Node(nodes.assemble_test_set, ["all_slices", "split", "params:evaluation"], "test_set",
                 name="assemble_test_set"),
        ]
    )


def net_pipeline(net: str) -> Pipeline:
    """Train and evaluate one net on every seed and partition, and plot, in the namespace ``net``."""
    template = Pipeline(
        [
            Node(_bind(nodes.train_evaluate_net, net=net),
                 ["all_slices", "split", "model_input", "params:model", "params:training", "params:evaluation",
                  "params:protocol", "params:sampling", "params:net_overrides"],
                 ["model", "history", "slice_metrics", "test_predictions", "lesion_metrics"],
                 name="train_evaluate"),
            Node(_bind(nodes.plot_training_curves, net=net), "history", "training_curves",
                 name="plot_training_curves"),
        ]
    )
    return Pipeline(
        template, inputs={"all_slices", "split", "model_input"},
        parameters={"params:model", "params:training", "params:evaluation", "params:protocol", "params:sampling",
                    "params:net_overrides"},
        namespace=net,
    )


def create_pipeline(**kwargs) -> Pipeline:
    """The ``train_eval`` pipeline."""
    per_net = Pipeline([net_pipeline(n) for n in NETS])
    with warnings.catch_warnings():
        # The report nodes read the namespaced outputs ("colearn.model", ...) by their full
        # names, which Kedro warns about although it is how namespaces are meant to be joined.
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        report = _report_pipeline()
    return split_pipeline() + per_net + report


def _report_pipeline() -> Pipeline:
    ev = "params:evaluation"
    return Pipeline(
        [
            Node(nodes.collect_slice_metrics, {n: f"{n}.slice_metrics" for n in NETS}, "test_slice_metrics",
                 name="collect_slice_metrics"),
            Node(nodes.build_table_ii, ["test_slice_metrics", ev], ["table_ii_csv", "table_ii_md"],
                 name="build_table_ii"),
            Node(nodes.build_paper_protocol_table, ["test_slice_metrics", ev, "params:protocol"],
                 ["table_ii_paper_protocol_csv", "table_ii_paper_protocol_md"], name="build_paper_protocol_table"),
            Node(nodes.build_ablation_table, ["test_slice_metrics", ev], ["table_ablation_csv", "table_ablation_md"],
                 name="build_ablation_table"),
            Node(nodes.collect_lesion_metrics, {n: f"{n}.lesion_metrics" for n in NETS}, "lesion_metrics",
                 name="collect_lesion_metrics"),
            Node(nodes.build_lesion_table, ["lesion_metrics", ev], ["table_lesions_csv", "table_lesions_md"],
                 name="build_lesion_table"),
            Node(nodes.write_answers, ["table_ii_csv", "table_ablation_csv", ev], "answers_md", name="write_answers"),
            Node(nodes.plot_segmentations,
                 {"test_set": "test_set", "figure_params": "params:figures",
                  **{n: f"{n}.test_predictions" for n in TABLE_II_NETS}},
                 "fig5_segmentations", name="plot_segmentations"),
            Node(nodes.plot_fusion_maps, ["colearn.model", "test_set", "params:figures"], "fig6_fusion_maps",
                 name="plot_fusion_maps"),
            Node(nodes.report_results, ["table_ii_md", "answers_md", "params:reporting"], None,
                 name="report_results"),
        ]
    )
