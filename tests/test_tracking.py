"""MLflowCallback and Tracker against a real MLflow server, and against none."""

from __future__ import annotations

import socket

import mlflow
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from bcdiag.datasets import ImageSet
from bcdiag.models.recipe import Recipe
from bcdiag.models.tracking import MLflowCallback, Tracker, TrackingWarning
from bcdiag.models.train import train_bundle

EPOCHS = 2


@pytest.mark.usefixtures("mlflow_tracking")
def test_callback_logs_every_epoch(breastmnist: ImageSet) -> None:
    callback = MLflowCallback()
    with mlflow.start_run() as run:
        train_bundle(breastmnist, Recipe(epochs=EPOCHS, members=1), cbs=[callback])
        assert callback.tracker.log_params({"epochs": EPOCHS})
        assert callback.tracker.log_figure(Figure(), "plots/empty.png")
    client = MlflowClient()
    for key in ("train_loss", "valid_loss", "roc_auc_score", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == list(range(EPOCHS)), key
    assert [row["epoch"] for row in callback.history] == list(range(EPOCHS))
    assert client.get_run(run.info.run_id).data.params == {"epochs": str(EPOCHS)}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/empty.png"]


@pytest.mark.usefixtures("mlflow_tracking")
def test_ensemble_members_continue_the_step(breastmnist: ImageSet) -> None:
    callback = MLflowCallback()
    with mlflow.start_run() as run:
        train_bundle(breastmnist, Recipe(epochs=1, members=2), cbs=[callback])
    history = MlflowClient().get_metric_history(run.info.run_id, "valid_loss")
    assert sorted(m.step for m in history) == [0, 1]


def test_unreachable_server_never_stops_training(
    breastmnist: ImageSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    tracker = Tracker(run_id="0" * 32, tracking_uri=dead, max_failures=2)
    callback = MLflowCallback(tracker)
    with pytest.warns(TrackingWarning, match="MLflow tracking failed") as caught:
        bundle = train_bundle(breastmnist, Recipe(epochs=3, members=1), cbs=[callback])
    assert len(bundle.members) == 1
    assert len([w for w in caught if w.category is TrackingWarning]) == 1
    assert len(callback.history) == 3
    assert tracker.failures == 2
    assert not tracker.enabled
    assert not tracker.log_params({"a": 1})


@pytest.mark.usefixtures("mlflow_tracking")
def test_no_active_run_is_reported_not_raised() -> None:
    assert mlflow.active_run() is None
    tracker = Tracker()
    with pytest.warns(TrackingWarning, match="no active MLflow run"):
        assert not tracker.log_metrics({"x": 1.0}, step=0)
    assert tracker.failures == 1
