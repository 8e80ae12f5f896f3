"""Wiring of ``train_eval``: split -> slice sets -> per-net namespaces (train, evaluate, curves)
-> Table II, Fig. 5, Fig. 6, report.

Each net's nodes live in the namespace of its name (``colearn.train``, ``tb.evaluate``, ...),
so Kedro-Viz shows four parallel node sets and ``kedro run --namespaces=tb`` runs one.
"""

from __future__ import annotations

import warnings
from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.train_eval import nodes

#: The four nets, in the paper's order (kept here so the pipeline structure is static).
NETS: tuple[str, ...] = ("colearn", "tb", "tc", "fs")


def _bind(func, **kwargs):
    """``functools.partial`` that keeps the function's name and docstring (for Kedro-Viz)."""
    return update_wrapper(partial(func, **kwargs), func)


def split_pipeline() -> Pipeline:
    """The split node and the train / test slice sets (shared with ``validate``)."""
    return Pipeline(
        [
            Node(nodes.split_studies, ["model_input", "params:split"], "split", name="split_studies"),
            Node(_bind(nodes.assemble_set, which="train"), ["model_input", "split"], "train_set",
                 name="assemble_train_set"),
            Node(_bind(nodes.assemble_set, which="test"), ["model_input", "split"], "test_set",
                 name="assemble_test_set"),
        ]
    )


def net_pipeline(net: str) -> Pipeline:
    """Train, evaluate and plot one net, in the namespace ``net``."""
    template = Pipeline(
        [
            Node(_bind(nodes.train_net, net=net), ["train_set", "params:model", "params:training"],
                 ["model", "history"], name="train"),
            Node(nodes.evaluate_net, ["model", "test_set", "params:evaluation"],
                 ["slice_metrics", "test_predictions"], name="evaluate"),
            Node(_bind(nodes.plot_training_curves, net=net), "history", "training_curves",
                 name="plot_training_curves"),
        ]
    )
    return Pipeline(template, inputs={"train_set", "test_set"}, parameters={"params:model", "params:training", "params:evaluation"}, namespace=net)


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
    return Pipeline(
        [
            Node(nodes.build_table_ii,
                 {"split": "split", "test_set": "test_set", "evaluation_params": "params:evaluation",
                  **{n: f"{n}.slice_metrics" for n in NETS}},
                 ["table_ii_csv", "table_ii_md", "test_slice_metrics"], name="build_table_ii"),
            Node(nodes.plot_segmentations,
                 {"test_set": "test_set", "figure_params": "params:figures",
                  **{n: f"{n}.test_predictions" for n in NETS}},
                 "fig5_segmentations", name="plot_segmentations"),
            Node(nodes.plot_fusion_maps, ["colearn.model", "test_set", "params:figures"], "fig6_fusion_maps",
                 name="plot_fusion_maps"),
            Node(nodes.report_results, ["table_ii_md", "params:reporting"], None, name="report_results"),
        ]
    )
