"""Wiring of ``validate``: for each net (namespace ``validate.<net>``) and each outer partition of
the split (one for holdout; K for K-fold: nested) every grid point is trained on training fold 1
and scored on fold 2, and vice versa; then the scores, the chosen settings (a ``net_overrides``
block), a Markdown table and one figure."""

from __future__ import annotations

import warnings

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.train_eval.pipeline import NETS, _bind
from colearn_pipeline.pipelines.train_eval.pipeline import split_pipeline as _split_pipeline
from colearn_pipeline.pipelines.validate import nodes


def _net_grid(net: str) -> Pipeline:
    template = Pipeline(
        [
            Node(_bind(nodes.validate_grid, net=net),
                 ["training_slices", "split", "params:model", "params:training", "params:evaluation",
                  "params:validation", "params:sampling"], ["scores", "histories"], name="validate_grid"),
        ]
    )
    return Pipeline(
        template, inputs={"training_slices", "split"},
        parameters={"params:model", "params:training", "params:evaluation", "params:validation", "params:sampling"},
        namespace=net,
    )


def create_pipeline(**kwargs) -> Pipeline:
    """The ``validate`` pipeline (``kedro run --pipeline validate``), all in namespace ``validate``.

    Node names: ``validate.assemble_training_slices``, ``validate.<net>.validate_grid``,
    ``validate.choose_settings``, ``validate.validation_markdown``, ``validate.plot_validation_curves``.
    """
    split = Pipeline([n for n in _split_pipeline().nodes if n.name == "split_studies"])
    scores = {n: f"{n}.scores" for n in NETS}
    histories = {n: f"{n}.histories" for n in NETS}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        inner = Pipeline(
            [
                Node(nodes.assemble_training_slices, ["model_input", "split"], "training_slices",
                     name="assemble_training_slices"),
                *[_net_grid(n) for n in NETS],
                Node(nodes.choose_settings, {"validation_params": "params:validation", **scores},
                     ["validation_scores_csv", "chosen_settings"], name="choose_settings"),
                Node(nodes.validation_markdown, ["validation_scores_csv", "params:validation"], "validation_md",
                     name="validation_markdown"),
                Node(nodes.plot_validation_curves, histories, "validation_curves", name="plot_validation_curves"),
            ]
        )
        validate = Pipeline(
            inner, inputs={"model_input", "split"},
            parameters={"params:model", "params:training", "params:evaluation", "params:validation",
                        "params:sampling"},
            namespace="validate",
        )
    return split + validate
