"""Wiring of the preprocess pipeline: one node per stage of the paper's section III-A.

raw_dicom + raw_reports -> discover_studies -> read_series -> convert_to_suv -> resample_pet_to_ct
-> segment_lungs -> segment_mediastinum -> segment_tumours -> compose_labels -> build_model_input
-> write_manifest -> build_review_gallery (data/08_reporting/review/index.html) and check_preprocess_outcome. Every per-study node also reads its own stored
partitions (``*_state``, the same files as its output) to skip studies whose fingerprint is unchanged.
"""

from kedro.pipeline import Node, Pipeline

from colearn_pipeline.pipelines.preprocess import manifest as m
from colearn_pipeline.pipelines.preprocess import nodes as n
from colearn_pipeline.pipelines.preprocess import review as r

EXECUTOR = "params:preprocess.executor"


def _stage(func, inputs: list[str], output: str, name: str) -> Node:
    return Node(func=func, inputs=[*inputs[:-1], f"{output}_state", *_params(inputs[-1]), EXECUTOR],
                outputs=output, name=name, tags=["preprocess"])


def _params(names: str) -> list[str]:
    return [p if p.startswith("params:") else f"params:preprocess.{p}" for p in names.split()]


def create_pipeline(**kwargs) -> Pipeline:
    """Return the preprocess pipeline (its raw inputs are the catalog's ``raw_dicom`` and ``raw_reports``)."""
    return Pipeline([
        Node(n.discover_studies, ["raw_dicom", "raw_reports", "params:preprocess.discover_studies"],
             ["preprocess_studies", "preprocess_discovery", "preprocess_pseudonym_map",
              "preprocess_file_map"], name="discover_studies",
             tags=["preprocess"]),
        _stage(n.read_series, ["raw_dicom", "preprocess_studies", "discover_studies read_series"],
               "preprocess_series", "read_series"),
        _stage(n.convert_to_suv, ["raw_dicom", "preprocess_series", "discover_studies read_series suv phantom_qa params:suv"],
               "preprocess_suv_pet", "convert_to_suv"),
        _stage(n.resample_pet_to_ct, ["preprocess_series", "preprocess_suv_pet", "pet_to_ct"],
               "preprocess_suv", "resample_pet_to_ct"),
        _stage(n.segment_lungs, ["preprocess_series", "lungs thorax_extent"], "preprocess_lungs", "segment_lungs"),
        _stage(n.segment_mediastinum, ["preprocess_series", "preprocess_lungs", "mediastinum thorax"],
               "preprocess_mediastinum", "segment_mediastinum"),
        _stage(n.segment_tumours, ["preprocess_studies", "preprocess_series", "preprocess_suv", "preprocess_lungs", "tumours"],
               "preprocess_tumours", "segment_tumours"),
        _stage(n.compose_labels, ["raw_dicom", "preprocess_series", "preprocess_lungs", "preprocess_mediastinum",
                                  "preprocess_tumours", "discover_studies read_series phantom_qa quality labels"],
               "preprocess_labels", "compose_labels"),
        _stage(n.build_model_input, ["preprocess_studies", "preprocess_series", "preprocess_suv", "preprocess_labels", "model_input"],
               "model_input", "build_model_input"),
        Node(m.write_manifest, ["preprocess_discovery", "preprocess_studies", "preprocess_series",
                                "preprocess_suv_pet", "preprocess_suv", "preprocess_lungs", "preprocess_mediastinum",
                                "preprocess_tumours", "preprocess_labels", "model_input"],
             ["preprocess_manifest_table", "preprocess_manifest"], name="write_manifest", tags=["preprocess"]),
        # named to sort before check_preprocess_outcome: the gallery is written even when the run is refused
        Node(r.build_review_gallery, ["preprocess_series", "preprocess_suv", "preprocess_lungs", "preprocess_mediastinum",
                                      "preprocess_tumours", "preprocess_labels", "preprocess_manifest",
                                      "params:preprocess.review", "params:preprocess.quality"],
             ["preprocess_review_pictures", "preprocess_review_preview", "preprocess_review_index"],
             name="build_review_gallery", tags=["preprocess"]),
        Node(m.check_outcome, ["preprocess_manifest", "params:preprocess.manifest"], None,
             name="check_preprocess_outcome", tags=["preprocess"]),
    ])
