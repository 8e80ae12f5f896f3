"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``phantom``, ``preprocess``, ``train_eval`` and ``validate`` are found by ``find_pipelines``
    (Kedro 1.7 loads only the ones a run asks for, so none may be assumed present here).
    ``__default__`` runs phantom -> preprocess -> train_eval, ordered by data: the phantom writes
    ``raw_dicom`` and ``raw_reports``, which preprocess reads, and preprocess writes ``model_input``.
    """
    from colearn_pipeline.pipelines import phantom, preprocess, train_eval

    pipelines = find_pipelines()
    pipelines["__default__"] = phantom.create_pipeline() + preprocess.create_pipeline() + train_eval.create_pipeline()
    return pipelines
