"""Inference on new studies: DICOM study -> labels on the CT grid, DICOM SEG, summary.

``study`` reads one study the way preprocess does (same discovery, series, SUV and grid code)
and finds its thorax slices; ``segment`` runs a trained net over them; ``seg`` writes and reads
DICOM SEG (highdicom); ``summary`` measures the result; ``models`` loads a bundle from a file
or an MLflow model URI; ``cohort`` runs all of it per study and records failures; ``cli`` is
``colearn-predict``. See docs/predict.md.
"""

from colearn_pipeline.inference.models import ModelLoadError, load_bundle
from colearn_pipeline.inference.seg import build_seg, read_label_map, write_seg
from colearn_pipeline.inference.segment import segment_volume
from colearn_pipeline.inference.study import StudyReadError, load_study, thorax_slices
from colearn_pipeline.inference.summary import summarise_labels

__all__ = [
    "ModelLoadError",
    "StudyReadError",
    "build_seg",
    "load_bundle",
    "load_study",
    "read_label_map",
    "segment_volume",
    "summarise_labels",
    "thorax_slices",
    "write_seg",
]
