"""Load a trained net's model bundle from a file or an MLflow model URI.

A bundle is the dict of :func:`colearn_pipeline.training.train_model` (``format``, ``net``,
``model_kwargs``, ``state_dict``, ``input_hw``, ...), read with ``torch.load(weights_only=True)``.
For MLflow URIs the bundle is the artifact that the training hook logs beside the MLflow model
(``state_dict/model.pt`` of the net's run): it carries the architecture and the input size that
``mlflow.pytorch`` models lack, and it loads without unpickling code.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from colearn_pipeline.training.loop import MODEL_FORMAT

#: Artifact path of the bundle inside a training run (hooks.py ``_log_model``).
BUNDLE_ARTIFACT = "state_dict/model.pt"


class ModelLoadError(ValueError):
    """A model reference that does not give a usable bundle; the message says which and why."""


def _read_bundle(path: str | os.PathLike, label: str) -> dict[str, Any]:
    try:
        bundle = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"model {label}: file does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelLoadError(
            f"model {label}: not a colearn-pipeline model bundle (torch.load failed: {type(exc).__name__})"
        ) from None
    if not isinstance(bundle, dict) or bundle.get("format") != MODEL_FORMAT:
        found = bundle.get("format") if isinstance(bundle, dict) else type(bundle).__name__
        raise ModelLoadError(f"model {label}: not a {MODEL_FORMAT} bundle (format {found!r})")
    missing = {"net", "model_kwargs", "state_dict", "input_hw"} - set(bundle)
    if missing:
        raise ModelLoadError(f"model {label}: bundle lacks {sorted(missing)}")
    return bundle


def _run_of_model_uri(client, uri: str) -> str:
    """The run id behind ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or ``runs:/<id>/...``."""
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").split("/", 1)[0]
        if not run_id:
            raise ModelLoadError(f"model {uri}: no run id in the URI")
        return run_id
    ref = uri.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = ref.partition("/")
            if not number.isdigit():
                raise ModelLoadError(f"model {uri}: expected models:/<name>/<version> or models:/<name>@<alias>")
            version = client.get_model_version(name, number)
    except ModelLoadError:
        raise
    except Exception as exc:  # MlflowException for an unknown name, version or alias
        raise ModelLoadError(f"model {uri}: not found in the MLflow registry ({type(exc).__name__})") from None
    if not version.run_id:
        raise ModelLoadError(f"model {uri}: the registered version names no training run")
    return str(version.run_id)


def _load_from_mlflow(uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = _run_of_model_uri(client, uri)
    with tempfile.TemporaryDirectory(prefix="colearn-model-") as tmp:
        try:
            local = client.download_artifacts(run_id, BUNDLE_ARTIFACT, tmp)
        except Exception as exc:  # unknown run, or a run without the bundle artifact
            raise ModelLoadError(
                f"model {uri}: run {run_id} has no {BUNDLE_ARTIFACT} artifact (the model bundle logged by "
                f"the training hook) or cannot be read ({type(exc).__name__})"
            ) from None
        bundle = _read_bundle(local, uri)
    return bundle, {"source": uri, "mlflow_run_id": run_id}


def load_bundle(model: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a model bundle.

    Parameters
    ----------
    model : str or path-like
        A bundle file (``data/06_models/colearn/model.pt``) or an MLflow model URI
        (``runs:/<run_id>/model``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``),
        resolved against the current MLflow tracking URI (``MLFLOW_TRACKING_URI``).

    Returns
    -------
    bundle : dict
        For :func:`colearn_pipeline.training.loop.load_model`.
    provenance : dict
        ``source`` (the reference given) and ``mlflow_run_id`` (None for a plain file).

    Raises
    ------
    ModelLoadError
        Missing file, a file that is not a bundle, an unknown URI, run or registered version.
    """
    ref = os.fspath(model)
    if ref.startswith(("runs:/", "models:/")):
        return _load_from_mlflow(ref)
    if "://" in ref:
        raise ModelLoadError(f"model {ref}: unsupported URI (give a file, runs:/<id>/model or models:/<name>/<version>)")
    if Path(ref).is_dir():
        raise ModelLoadError(f"model {ref}: is a folder, not a model bundle file")
    return _read_bundle(ref, ref), {"source": ref, "mlflow_run_id": None}


@dataclass
class ModelEnsemble:
    """The nets named by one or several model references, ready to run (:func:`load_ensemble`).

    Attributes
    ----------
    models : list of torch.nn.Module
        In eval mode on the device, prepared for inference.
    bundles : list of dict
        Their bundles (all of one input size and number of classes).
    provenances : list of dict
        Their :func:`load_bundle` provenances.
    """

    models: list[torch.nn.Module]
    bundles: list[dict[str, Any]]
    provenances: list[dict[str, Any]]

    @property
    def bundle(self) -> dict[str, Any]:
        """The first member's bundle (the net name, input size and epochs the SEG and summary report)."""
        return self.bundles[0]

    @property
    def provenance(self) -> dict[str, Any]:
        """``source`` (the references, space-separated), ``mlflow_run_id`` (comma-separated, None for files)
        and ``members`` (how many nets)."""
        runs = [str(p["mlflow_run_id"]) for p in self.provenances if p.get("mlflow_run_id")]
        return {"source": " ".join(str(p["source"]) for p in self.provenances),
                "mlflow_run_id": ",".join(runs) or None, "members": len(self.models)}


def load_ensemble(refs: str | os.PathLike | Sequence[str | os.PathLike], device: str | torch.device,
                  prepare: Callable[[torch.nn.Module, dict[str, Any]], torch.nn.Module] | None = None) -> ModelEnsemble:
    """Load every model reference (:func:`load_bundle`) and build its net on ``device``.

    Parameters
    ----------
    refs : str, path-like or sequence of them
        One reference or several (the K-fold or seed models of a run); a single string is one
        reference.
    device : str or torch.device
    prepare : callable, optional
        ``prepare(net, bundle)``, applied to each net after loading (e.g. a wrapper of
        :func:`colearn_pipeline.inference.segment.prepare_model`).

    Returns
    -------
    ModelEnsemble

    Raises
    ------
    ModelLoadError
        No reference, a bad one, or members of different input sizes or numbers of classes (their
        probabilities cannot be averaged).
    """
    from colearn_pipeline.training.loop import load_model

    refs = [refs] if isinstance(refs, (str, os.PathLike)) else list(refs)
    if not refs:
        raise ModelLoadError("no model given")
    bundles, provenances, models = [], [], []
    for ref in refs:
        bundle, provenance = load_bundle(ref)
        first = bundles[0] if bundles else bundle
        for key, what in (("input_hw", "input size"), ("num_classes", "number of classes")):
            mine = list(bundle["input_hw"]) if key == "input_hw" else bundle["model_kwargs"].get(key)
            theirs = list(first["input_hw"]) if key == "input_hw" else first["model_kwargs"].get(key)
            if mine != theirs:
                raise ModelLoadError(f"model {provenance['source']}: {what} {mine} differs from "
                                     f"{theirs} of {provenances[0]['source']}; ensemble members must agree")
        model = load_model(bundle, device)
        bundles.append(bundle)
        provenances.append(provenance)
        models.append(prepare(model, bundle) if prepare else model)
    return ModelEnsemble(models, bundles, provenances)
