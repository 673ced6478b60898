"""The recipe travels whole: command line, BCDIAG_RETRAIN_RECIPE and notebook parameter in,
every field in MLflow's params and ``recipe.json`` out; unknown keys stop the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow_server import MlflowServer

from bcdiag.errors import BcdiagError
from bcdiag.lifecycle.notebook_runs import run_notebook
from bcdiag.lifecycle.retrain import run_cycle
from bcdiag.models.recipe import ARTIFACT, Recipe, RecipeError, recipe_for
from bcdiag.settings import get_settings
from bcdiag.storage import upgrade

# Every field away from its default, and still a run of seconds.
EVERY_FIELD: dict[str, Any] = {
    "architecture": "efficientnet_lite0",
    "image_size": 32,
    "frozen_blocks": 5,
    "patience": 1,
    "epochs": 1,
    "batch_size": 16,
    "lr": 0.002,
    "weight_decay": 0.0001,
    "label_smoothing": 0.1,
    "members": 1,
    "seed": 3,
    "threshold_rule": "sensitivity",
    "min_sensitivity": 0.8,
    "max_rotate": 10.0,
    "max_zoom": 1.05,
    "max_lighting": 0.1,
    "tta_rotations": [-4.0, 4.0],
}
VALID_KEYS = ", ".join(Recipe.model_fields)


def test_the_full_recipe_sets_every_field_away_from_its_default() -> None:
    defaults = Recipe().as_dict()
    assert set(EVERY_FIELD) == set(defaults)  # a new field must be added here too
    assert [k for k, v in EVERY_FIELD.items() if defaults[k] == v] == []
    assert Recipe.parse(EVERY_FIELD, "test").as_dict() == EVERY_FIELD


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_sensitivty": 0.9}, f"unknown recipe key 'min_sensitivty'; valid keys: {VALID_KEYS}"),
        ({"epochs": "ten"}, "epochs = 'ten': Input should be a valid integer"),
        ({"threshold_rule": "max"}, "threshold_rule = 'max': Input should be 'youden' or"),
        ({"min_sensitivity": 0.9}, "min_sensitivity is required by, and only allowed with,"),
        ({"threshold_rule": "sensitivity"}, "min_sensitivity is required by, and only allowed"),
    ],
)
def test_a_wrong_key_or_value_names_itself_and_the_source(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(RecipeError) as raised:
        Recipe.parse(values, "BCDIAG_RETRAIN_RECIPE")
    assert str(raised.value).startswith("BCDIAG_RETRAIN_RECIPE: ")
    assert message in str(raised.value)


def test_changes_replace_the_data_sets_recipe_and_keep_the_rest() -> None:
    mias = recipe_for("mias", {"epochs": 3})
    assert (mias.epochs, mias.image_size, mias.members) == (3, 64, 2)
    assert mias.changed(seed=7).as_dict() == {**mias.as_dict(), "seed": 7}
    assert recipe_for("breastmnist") == Recipe()


def test_params_are_mlflow_strings_and_the_dict_round_trips(tmp_path: Path) -> None:
    recipe = Recipe.parse(EVERY_FIELD, "test")
    params = recipe.as_params()
    assert params["tta_rotations"] == "[-4.0, 4.0]" and params["lr"] == 0.002
    assert Recipe().as_params()["min_sensitivity"] == "null"
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe.as_dict()))
    assert Recipe.load(str(path)) == recipe


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), ("{not json", "is not valid JSON"), ("[1, 2]", "a JSON object")],
)
def test_an_unreadable_recipe_file_is_named(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "recipe.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RecipeError, match=message) as raised:
        Recipe.load(str(path))
    assert str(path) in str(raised.value)


def _bcdiag(server: MlflowServer, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bcdiag", *args],
        env={**os.environ, "MLFLOW_TRACKING_URI": server.url, **env},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _logged_recipe(client: MlflowClient, run_id: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The run's recipe params (as MLflow stores them) and its ``recipe.json``."""
    params = client.get_run(run_id).data.params
    folder = client.download_artifacts(run_id, ARTIFACT)
    return {k: params[k] for k in Recipe.model_fields}, json.loads(Path(folder).read_text())


def _as_params(values: dict[str, Any]) -> dict[str, str]:
    """What MLflow stores for each value of `values`."""
    return {k: str(v) for k, v in Recipe.parse(values, "test").as_params().items()}


@pytest.mark.slow
def test_every_field_reaches_mlflow_through_train_and_is_rerun_from_the_run(
    mlflow_server: MlflowServer, mlflow_tracking: str, data_dir: Path, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment(mlflow_tracking).name
    common = ("--experiment", experiment, "--data-dir", str(data_dir), "--no-register", "--json")
    file = tmp_path / "recipe.json"
    file.write_text(json.dumps(EVERY_FIELD))

    trained = _bcdiag(mlflow_server, "train", "--recipe", str(file), *common)
    assert trained.returncode == 0, trained.stderr[-3000:]
    first = json.loads(trained.stdout.strip().splitlines()[-1])["run_id"]
    params, logged = _logged_recipe(client, first)
    assert logged == EVERY_FIELD
    assert params == _as_params(EVERY_FIELD)

    again = _bcdiag(mlflow_server, "train", "--recipe", f"runs:/{first}/{ARTIFACT}", *common)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])["run_id"]
    assert second != first
    assert _logged_recipe(client, second) == (params, logged)

    changed = _bcdiag(
        mlflow_server, "train", "--recipe", f"runs:/{first}/{ARTIFACT}", "--seed", "4", *common
    )
    assert changed.returncode == 0, changed.stderr[-3000:]
    third = json.loads(changed.stdout.strip().splitlines()[-1])["run_id"]
    assert _logged_recipe(client, third)[1] == {**EVERY_FIELD, "seed": 4}


@pytest.mark.slow
def test_every_field_reaches_mlflow_through_a_retraining_cycle(
    mlflow_tracking: str,
    data_dir: Path,
    bcdiag_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bcdiag_home.mkdir(parents=True)
    upgrade(get_settings().resolved_database_url)
    monkeypatch.setenv("BCDIAG_RETRAIN_RECIPE", json.dumps(EVERY_FIELD))  # kernels inherit it
    get_settings.cache_clear()
    (outcome,) = run_cycle(modalities=["US"], data_dir=data_dir, user="t")
    assert outcome.run_id is not None and outcome.challenger_version == "1", outcome.reason
    params, logged = _logged_recipe(MlflowClient(), outcome.run_id)
    assert logged == EVERY_FIELD
    assert params == _as_params(EVERY_FIELD)


def test_a_misspelled_key_stops_each_way_in(
    mlflow_server: MlflowServer,
    mlflow_tracking: str,
    data_dir: Path,
    bcdiag_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrong = f"unknown recipe key 'epochz'; valid keys: {VALID_KEYS}"
    file = tmp_path / "recipe.json"
    file.write_text('{"epochz": 2}')
    by_file = _bcdiag(mlflow_server, "train", "--recipe", str(file))
    assert by_file.returncode == 1 and f"{file}: {wrong}" in by_file.stderr
    assert "Traceback" not in by_file.stderr

    bcdiag_home.mkdir(parents=True)
    upgrade(get_settings().resolved_database_url)
    by_setting = _bcdiag(
        mlflow_server, "retrain", "--now", "--modality", "US", "--data-dir", str(data_dir),
        BCDIAG_HOME=str(bcdiag_home), BCDIAG_RETRAIN_RECIPE='{"epochz": 2}',
    )  # fmt: skip
    assert by_setting.returncode == 1 and f"BCDIAG_RETRAIN_RECIPE: {wrong}" in by_setting.stderr
    assert "Traceback" not in by_setting.stderr

    experiment = MlflowClient().get_experiment(mlflow_tracking).name
    with pytest.raises(BcdiagError) as raised:
        run_notebook(
            "train",
            {"recipe": {"epochz": 2}, "data_dir": str(data_dir)},
            experiment=experiment,
            run_name="misspelled",
        )
    assert f"notebook parameter 'recipe': {wrong}" in str(raised.value)
    assert not MlflowClient().search_runs([mlflow_tracking], "attributes.status = 'FINISHED'")
