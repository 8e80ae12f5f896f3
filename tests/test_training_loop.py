"""Training loop: learning, checkpoints, and a killed run resuming to bit-identical weights."""

import math

import numpy as np
import pytest
import torch

from colearn_pipeline.training import (
    TrainConfig,
    TrainingInterrupted,
    list_checkpoints,
    load_model,
    train_model,
)
from colearn_pipeline.training.checkpoint import atomic_torch_save, capture_rng_states, restore_rng_states
from synthetic_studies import synthetic_train_set

MODEL = {"width": 4, "depth": 2}


@pytest.fixture(scope="module")
def train_set():
    return synthetic_train_set(n_studies=3, n_slices=4, size=32)


def _cfg(**kw):
    base = dict(seed=3, epochs=4, batch_size=5, learning_rate=0.01, l2_lambda=0.001, checkpoint_every=2,
                keep_checkpoints=0, progress=False)
    base.update(kw)
    return base


def _stop_after(epoch):
    """An on_epoch_end callback that kills the run after ``epoch`` (as a preemption would)."""

    def callback(row):
        if row["epoch"] >= epoch:
            raise TrainingInterrupted(f"killed after epoch {row['epoch']}")

    return callback


def _equal_states(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_table_i_defaults():
    cfg = TrainConfig()
    assert (cfg.learning_rate, cfg.momentum, cfg.batch_size, cfg.epochs, cfg.l2_lambda) == (1e-4, 0.9, 5, 500, 0.1)
    assert cfg.augmentation["pad"] == 10
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_params({"learnin_rate": 1})
    with pytest.raises(ValueError, match="stop_after_epoch.*callback"):
        TrainConfig.from_params({"stop_after_epoch": 3})
    assert TrainConfig.from_params({"stop_after_epoch": None}) == TrainConfig()  # older conf still loads
    with pytest.raises(ValueError, match="device_augment"):
        TrainConfig.from_params({"device_augment": "yes"})


def test_history_and_bundle(train_set):
    rows = []
    bundle, history = train_model("tc", MODEL, train_set, _cfg(epochs=2), val_set=train_set, on_epoch_end=rows.append)
    assert [r["epoch"] for r in history] == [1, 2] and rows == history
    for r in history:
        assert math.isfinite(r["train_loss"]) and 0 <= r["train_accuracy"] <= 1
        assert 0 <= r["val_accuracy"] <= 1 and r["slices_per_s"] > 0
    model = load_model(bundle)
    assert not model.training
    assert bundle["input_hw"] == [32, 32]
    out = model(torch.from_numpy(train_set["x"][:2]))
    assert out.shape == (2, 4, 32, 32)


def test_training_reduces_the_loss(train_set):
    _, history = train_model("colearn", MODEL, train_set, _cfg(epochs=8, learning_rate=0.05, l2_lambda=0.0))
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_same_seed_same_weights(train_set):
    a, _ = train_model("fs", MODEL, train_set, _cfg(epochs=2))
    b, _ = train_model("fs", MODEL, train_set, _cfg(epochs=2))
    _equal_states(a["state_dict"], b["state_dict"])


@pytest.mark.parametrize("net", ["colearn", "tb"])
def test_killed_run_resumes_to_identical_weights(train_set, tmp_path, net):
    """Checkpoints every 2 epochs; the run dies after epoch 3 (after the epoch-2 checkpoint).

    The restarted run loads epoch 2, redoes epoch 3 and finishes epoch 4: weights, BN
    statistics and history must equal an uninterrupted run exactly.
    """
    reference, ref_hist = train_model(net, MODEL, train_set, _cfg())
    with pytest.raises(TrainingInterrupted):
        train_model(net, MODEL, train_set, _cfg(), checkpoint_dir=tmp_path, on_epoch_end=_stop_after(3))
    (run_dir,) = list(tmp_path.iterdir())
    assert [e for e, _ in list_checkpoints(run_dir)] == [2]
    # scramble global RNGs as a fresh process would have them
    torch.manual_seed(12345)
    np.random.seed(54321)
    resumed, hist = train_model(net, MODEL, train_set, _cfg(), checkpoint_dir=tmp_path)
    _equal_states(reference["state_dict"], resumed["state_dict"])
    assert [r["train_loss"] for r in hist] == [r["train_loss"] for r in ref_hist]
    assert [e for e, _ in list_checkpoints(run_dir)] == [2, 4]


def test_finished_run_is_not_retrained_and_other_config_gets_own_folder(train_set, tmp_path):
    first, _ = train_model("tc", MODEL, train_set, _cfg(epochs=2), checkpoint_dir=tmp_path)
    again, hist = train_model("tc", MODEL, train_set, _cfg(epochs=2), checkpoint_dir=tmp_path, on_epoch_end=_stop_after(0))
    _equal_states(first["state_dict"], again["state_dict"])  # loaded, no epoch run (the callback would raise)
    assert len(hist) == 2
    train_model("tc", MODEL, train_set, _cfg(epochs=2, learning_rate=0.02), checkpoint_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_keep_checkpoints_prunes(train_set, tmp_path):
    train_model("tc", MODEL, train_set, _cfg(epochs=4, checkpoint_every=1, keep_checkpoints=2), checkpoint_dir=tmp_path)
    (run_dir,) = list(tmp_path.iterdir())
    assert [e for e, _ in list_checkpoints(run_dir)] == [3, 4]
    assert not list(run_dir.glob("*.tmp"))


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    g = torch.Generator().manual_seed(9)
    states = capture_rng_states(g)
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random(), torch.rand(2, generator=g))
    atomic_torch_save(states, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    g2 = torch.Generator()
    restore_rng_states(loaded, g2)
    got = (torch.rand(3), np.random.rand(3), __import__("random").random(), torch.rand(2, generator=g2))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and torch.equal(expected[3], got[3])
