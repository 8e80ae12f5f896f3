"""Fig. 5 panels, Fig. 6 fusion-map grid (per-channel normalisation) and training curves."""

import numpy as np
import pandas as pd

from colearn_pipeline.evaluation import (
    first_fusion_map,
    fusion_map_grid,
    segmentation_panels,
    select_slices,
    training_curves,
)
from colearn_pipeline.models import build_model


def test_select_slices_prefers_tumour():
    y = np.zeros((4, 8, 8), np.uint8)
    y[2, :3, :3] = 3
    y[0, 0, 0] = 3
    assert select_slices(y, 2) == [0, 2]


def test_segmentation_panels_layout():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 16, 16)).astype(np.float32)
    y = rng.integers(0, 4, (3, 16, 16))
    preds = {n: y for n in ("colearn", "tb", "tc", "fs")}
    fig = segmentation_panels(x, y, preds, [0, 2])
    titles = [ax.get_title() for ax in fig.axes[:6]]
    assert titles == ["fused PET-CT", "GT", "TB", "TC", "FS", "our method"]
    assert len(fig.axes) == 12
    fused = fig.axes[0].get_images()[0].get_array()
    assert fused.shape == (16, 16, 3) and fused.min() >= 0 and fused.max() <= 1


def test_fusion_map_grid_normalises_each_channel():
    fmap = np.stack([np.linspace(0, 1, 16).reshape(4, 4) * s + o for s, o in [(1, 0), (100, -50), (0, 3), (2, 1)]])
    fig = fusion_map_grid(fmap, columns=2)
    images = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    assert len(images) == 4
    for img, ch in zip(images, fmap):
        if np.ptp(ch) > 0:
            assert np.isclose(img.min(), 0) and np.isclose(img.max(), 1)
        else:
            assert np.all(img == 0)
    assert [ax.get_title() for ax in fig.axes] == ["CT 1", "CT 2", "PET 1", "PET 2"]


def test_first_fusion_map_of_colearn_net():
    model = build_model("colearn", width=4, depth=2)
    fmap = first_fusion_map(model, np.zeros((2, 16, 16), np.float32))
    assert fmap.shape == (8, 8, 8)  # 2c channels at half resolution


def test_training_curves_has_validation_lines():
    h = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_accuracy": [0.5, 0.7],
                      "val_loss": [1.1, 0.6], "val_accuracy": [0.4, 0.6]})
    fig = training_curves({"colearn": h})
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].get_lines()) == 2
