"""Wiring of ``validate``: for each net (namespace ``validate.<net>``) train on fold 1 and
validate on fold 2, and vice versa; then one table and one figure of all folds."""

from __future__ import annotations

import warnings

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.train_eval.pipeline import NETS, _bind
from colearn_pipeline.pipelines.train_eval.pipeline import split_pipeline as _split_pipeline
from colearn_pipeline.pipelines.train_eval import nodes as te_nodes
from colearn_pipeline.pipelines.validate import nodes


def _net_folds(net: str) -> Pipeline:
    template = Pipeline(
        [
            Node(_bind(nodes.train_fold, net=net, fold=1),
                 ["fold_1_set", "fold_2_set", "params:model", "params:training"], "fold_1_history",
                 name="train_fold_1"),
            Node(_bind(nodes.train_fold, net=net, fold=2),
                 ["fold_2_set", "fold_1_set", "params:model", "params:training"], "fold_2_history",
                 name="train_fold_2"),
        ]
    )
    return Pipeline(
        template, inputs={"fold_1_set", "fold_2_set"}, parameters={"params:model", "params:training"}, namespace=net
    )


def create_pipeline(**kwargs) -> Pipeline:
    """The ``validate`` pipeline (``kedro run --pipeline validate``), all in namespace ``validate``.

    Node names: ``validate.assemble_fold_<k>``, ``validate.<net>.train_fold_<k>``,
    ``validate.fold_accuracies``, ``validate.validation_markdown``, ``validate.plot_validation_curves``.
    """
    split = Pipeline([n for n in _split_pipeline().nodes if n.name == "split_studies"])
    histories = {f"{n}_{k}": f"{n}.fold_{k}_history" for n in NETS for k in (1, 2)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        inner = Pipeline(
            [
                *[
                    Node(_bind(te_nodes.assemble_set, which=f"fold_{k}"), ["model_input", "split"],
                         f"fold_{k}_set", name=f"assemble_fold_{k}")
                    for k in (1, 2)
                ],
                *[_net_folds(n) for n in NETS],
                Node(nodes.fold_accuracies, {"validation_params": "params:validation", **histories},
                     "validation_accuracy_csv", name="fold_accuracies"),
                Node(nodes.validation_markdown, "validation_accuracy_csv", "validation_accuracy_md",
                     name="validation_markdown"),
                Node(nodes.plot_validation_curves, histories, "validation_curves", name="plot_validation_curves"),
            ]
        )
        validate = Pipeline(
            inner, inputs={"model_input", "split"},
            parameters={"params:model", "params:training", "params:validation"}, namespace="validate",
        )
    return split + validate
