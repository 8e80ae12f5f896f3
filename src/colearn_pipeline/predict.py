"""Former module of ``colearn-predict``; the code is in :mod:`colearn_pipeline.inference`.

Kept as an import alias so ``python -m colearn_pipeline.predict`` and existing imports of the
NPZ helpers keep working (``colearn-predict --study NPZ`` maps a model input's slices back).
"""

import sys

from colearn_pipeline.inference.cli import main
from colearn_pipeline.inference.segment import labels_to_ct_volume, write_label_nifti
from colearn_pipeline.training.inputs import resize_labels_nearest as resize_nearest

__all__ = ["labels_to_ct_volume", "main", "resize_nearest", "write_label_nifti"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
