"""`deepapps <app> tune`: TPE and grid searches on every app, failed trials, bad input, a killed
search resumed, two workers on one storage, and a refit that `evaluate` scores.

Every search runs the app's tiny config for one epoch of two batches (FAST) over a tiny space
written to tmp; the trials of the in-process searches share the test process's imports.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import polars as pl
import pytest
import yaml

from deepapps.core.cli import main
from deepapps.core.config import ImageFitConfig
from deepapps.core.tuning import grid_space, read_space
from tests.helpers import REPO

APPS = REPO / "apps"
FAST = {"trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2}}
DROPOUT = {"vision": "model.drop_rate", "healthcare": "model.drop_rate", "nlp": "model.drop_rate",
           "fraud": "model.dropout", "forecast": "model.dropout"}


@pytest.fixture(scope="module")
def fast(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fast") / "fast.yaml"
    path.write_text(yaml.safe_dump(FAST))
    return path


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    from tests.apps.nlp_helpers import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


def app_args(app: str, fast: Path, bert: Path) -> list[str]:
    """The app's tiny config, made faster (one epoch, two batches)."""
    tiny = {"vision": APPS / "vision/configs/tiny.yaml", "healthcare": APPS / "healthcare/configs/tiny.yaml",
            "nlp": APPS / "nlp/configs/tiny.yaml", "fraud": APPS / "finance/fraud/configs/tiny.yaml",
            "forecast": APPS / "finance/forecast/configs/tiny.yaml"}[app]
    extra = {"vision": ["--data.batch_size", "16"], "nlp": ["--model.pretrained", str(bert)],
             "fraud": ["--data.synth_rows", "5000"]}.get(app, [])
    return ["--config", str(tiny), "--config", str(fast), *extra]


def write_space(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space))
    return path


def trials_table(tune_dir: Path) -> pl.DataFrame:
    return pl.read_csv(tune_dir / "trials.csv", infer_schema_length=None)


def forecast_tune(fast: Path, *options: str) -> list[str]:
    """A forecast search in a subprocess (the cheapest trials), of a few epochs per trial."""
    return [sys.executable, "-m", "deepapps.core.cli", "forecast", "tune", "--config",
            str(APPS / "finance/forecast/configs/tiny.yaml"), "--config", str(fast), "--trainer.patience", "20",
            *options]


@pytest.mark.parametrize("app", list(DROPOUT))
def test_tpe_search_of_three_trials(app, tmp_path, fast, bert, capsys):
    space = write_space(tmp_path / "space.yaml", {
        "optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        DROPOUT[app]: {"type": "categorical", "choices": [0.0, 0.1]},
    })
    tune_dir = tmp_path / "tune"
    code = main([app, "tune", *app_args(app, fast, bert), "--tune.trials", "3", "--tune.space", str(space),
                 "--run_dir", str(tune_dir)])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tune_dir)
    table = trials_table(tune_dir)
    assert table["state"].to_list() == ["COMPLETE"] * 3
    assert {"optim.lr", DROPOUT[app], "value", "seconds", "best_epoch"} <= set(table.columns)
    assert (tune_dir / "study.db").is_file() and (tune_dir / "plots" / "optimization_history.png").is_file()
    # a trial trains only: its config and its log, no checkpoint, ONNX, plots or model card
    for trial in (tune_dir / "trials").iterdir():
        assert sorted(p.name for p in trial.iterdir()) == ["config.yaml", "csv"]
    # best.yaml is the fit config with the best trial's values
    study = optuna.load_study(study_name=app, storage=f"sqlite:///{tune_dir / 'study.db'}")
    best = yaml.safe_load((tune_dir / "best.yaml").read_text())
    assert best["optim"]["lr"] == study.best_params["optim.lr"]
    assert study.best_value == (table["value"].max() if study.direction.name == "MAXIMIZE" else table["value"].min())
    assert best["run_dir"] is None and best["trainer"]["max_epochs"] == 1


@pytest.mark.parametrize("app", list(DROPOUT))
def test_grid_search_covers_a_two_by_two_grid(app, tmp_path, fast, bert):
    space = write_space(tmp_path / "space.yaml", {
        "optim.lr": {"type": "categorical", "choices": [0.001, 0.003]},
        DROPOUT[app]: {"type": "float", "low": 0.0, "high": 0.2, "step": 0.2},
    })
    tune_dir = tmp_path / "tune"
    # --tune.trials 10: the grid's 4 points end the search
    code = main([app, "tune", *app_args(app, fast, bert), "--tune.sampler", "grid", "--tune.trials", "10",
                 "--tune.space", str(space), "--run_dir", str(tune_dir)])
    assert code == 0
    table = trials_table(tune_dir)
    assert table.height == 4 and set(table["state"]) == {"COMPLETE"}
    assert set(zip(table["optim.lr"], table[DROPOUT[app]])) == {(a, b) for a in (0.001, 0.003) for b in (0.0, 0.2)}


def test_a_failed_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path, fast, bert):
    space = write_space(tmp_path / "space.yaml", {"model.drop_rate": {"type": "categorical", "choices": [1.5, 0.0]}})
    tune_dir = tmp_path / "tune"
    code = main(["vision", "tune", *app_args("vision", fast, bert), "--tune.sampler", "grid", "--tune.trials", "2",
                 "--tune.space", str(space), "--run_dir", str(tune_dir)])
    assert code == 0
    rows = {r["model.drop_rate"]: r for r in trials_table(tune_dir).to_dicts()}
    assert rows[1.5]["state"] == "FAIL" and rows[1.5]["reason"] == "--model.drop_rate 1.5: must be in [0, 1)"
    assert rows[0.0]["state"] == "COMPLETE"
    assert yaml.safe_load((tune_dir / "best.yaml").read_text())["model"]["drop_rate"] == 0.0


BAD_SPACES = {
    "unknown field": ({"optim.lrr": {"type": "float", "low": 0.1, "high": 0.2}},
                      ["optim.lrr is not a field of the vision config", "did you mean optim.lr?"]),
    "a section": ({"optim": {"type": "float", "low": 0.1, "high": 0.2}}, ["optim is a section"]),
    "wrong type": ({"data.image_size": {"type": "categorical", "choices": ["large"]}},
                   ["data.image_size: choice 'large' does not fit the field"]),
    "float range on a str field": ({"optim.schedule": {"type": "float", "low": 0.1, "high": 0.2}},
                                   ["optim.schedule: a float range does not fit the field"]),
    "unknown distribution": ({"optim.lr": {"type": "normal", "low": 0.1}}, ["unknown type 'normal'"]),
    "log from zero": ({"optim.lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}, ["needs `low` > 0"]),
    "the objective": ({"trainer.monitor": {"type": "categorical", "choices": ["val/loss"]}}, ["cannot be searched"]),
}


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_a_bad_space_is_one_line_naming_file_and_field(case, tmp_path):
    space, needles = BAD_SPACES[case]
    path = write_space(tmp_path / "space.yaml", space)
    with pytest.raises(Exception) as caught:
        read_space(path, ImageFitConfig, "vision")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("deepapps: error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, fast, bert, capsys):
    base = ["vision", "tune", *app_args("vision", fast, bert), "--run_dir", str(tmp_path / "tune")]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing searched\n")
    one_line_error(capsys, [*base, "--tune.space", str(empty)], str(empty), "the space is empty")
    unknown = write_space(tmp_path / "unknown.yaml", {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5}})
    one_line_error(capsys, [*base, "--tune.space", str(unknown)], str(unknown), "model.dropout is not a field")
    grid = write_space(tmp_path / "grid.yaml", {"optim.lr": {"type": "categorical", "choices": [0.1, 0.2, 0.3]},
                                                "model.drop_rate": {"type": "categorical", "choices": [0.0, 0.1]}})
    one_line_error(capsys, [*base, "--tune.space", str(grid), "--tune.sampler", "grid", "--tune.trials", "5"],
                   "the grid has 6 points, more than --tune.trials 5")
    lr = write_space(tmp_path / "lr.yaml", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    one_line_error(capsys, [*base, "--tune.space", str(lr), "--tune.sampler", "grid"],
                   "optim.lr: a grid search needs finite values")
    one_line_error(capsys, [*base, "--tune.space", str(lr), "--tune.storage", f"sqlite:///{tmp_path}/no/such/dir/s.db"],
                   "--tune.storage", "cannot be opened")
    message = one_line_error(capsys, [*base, "--tune.space", str(lr), "--tune.storage",
                                      "postgresql://me:secret@127.0.0.1:9/db"], "cannot be opened")
    assert "secret" not in message
    one_line_error(capsys, [*base, "--tune.space", str(lr), "--tune.sampler", "cmaes"], "--tune.sampler cmaes")
    one_line_error(capsys, [*base, "--tune.space", str(tmp_path / "absent.yaml")], "absent.yaml: no such file")
    one_line_error(capsys, [*base, "--tune.space", str(lr), "--tune.trialz", "3"], "tune.trialz")
    assert not (tmp_path / "tune" / "trials").exists()  # nothing ran


def test_the_grid_counts_finite_values():
    from deepapps.core.tuning import Dimension

    space = [Dimension("a", "float", 0.0, 0.3, step=0.1), Dimension("b", "int", 1, 4, step=2),
             Dimension("c", "categorical", choices=(None, "x"))]
    assert grid_space(space, 16, "w") == {"a": [0.0, 0.1, 0.2, 0.3], "b": [1, 3], "c": [None, "x"]}


def test_a_killed_search_resumes_where_it_stopped(tmp_path, fast):
    space = write_space(tmp_path / "space.yaml", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    tune_dir = tmp_path / "tune"
    command = forecast_tune(fast, "--trainer.max_epochs", "10", "--trainer.limit_train_batches", "8",
                            "--tune.trials", "4", "--tune.space", str(space), "--run_dir", str(tune_dir))
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (tune_dir / "trials" / "1" / "config.yaml").is_file():  # trial 0 done, trial 1 training
        assert worker.poll() is None and time.monotonic() < deadline, "the search ended before it was killed"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert main(["forecast", "tune", *command[command.index("--config"):]]) == 0
    table = trials_table(tune_dir)
    states = table["state"].to_list()
    # 4 trials in all (complete, or pruned by the median pruner): the killed one is retried, nothing more
    assert states.count("COMPLETE") + states.count("PRUNED") == 4 and states.count("COMPLETE") >= 3
    killed = table.filter(pl.col("state") == "FAIL")
    assert killed.height == 1 and killed["reason"][0].startswith("interrupted")
    assert killed["number"][0] == 1
    retried = table.filter(pl.col("retry_of") == 1)  # the killed trial's values are run again
    assert retried.height == 1 and retried["optim.lr"][0] == killed["optim.lr"][0]
    assert retried["state"][0] in ("COMPLETE", "PRUNED") and retried["reason"][0] is None


def test_two_workers_share_one_study(tmp_path, fast):
    space = write_space(tmp_path / "space.yaml", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    tune_dir = tmp_path / "tune"
    tune_dir.mkdir()
    storage = f"sqlite:///{tune_dir / 'shared.db'}"
    workers = [subprocess.Popen(forecast_tune(fast, "--trainer.max_epochs", "3", "--tune.trials", "6",
                                              "--tune.space", str(space), "--tune.storage", storage,
                                              "--tune.seed", str(seed), "--run_dir", str(tune_dir / f"worker{seed}")),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    study = optuna.load_study(study_name="forecast", storage=storage)
    by_worker: dict[int, int] = {}
    for trial in study.trials:
        pid = trial.user_attrs["worker"]["pid"]
        by_worker[pid] = by_worker.get(pid, 0) + 1
    assert set(by_worker) == {w.pid for w in workers}  # both worked on the study
    assert sum(by_worker.values()) == len(study.trials)
    # the study ends at its 6 trials (a worker may start one more in the instant another finishes)
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"} and 6 <= len(study.trials) <= 7
    # each worker's trials.csv lists the whole study
    assert trials_table(tune_dir / "worker1").height >= 6


def test_refit_writes_a_run_that_evaluate_scores(tmp_path, fast, bert, capsys):
    space = write_space(tmp_path / "space.yaml", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    tune_dir = tmp_path / "tune"
    code = main(["vision", "tune", *app_args("vision", fast, bert), "--tune.trials", "2", "--tune.space", str(space),
                 "--run_dir", str(tune_dir), "--tune.refit"])
    assert code == 0
    refit = tune_dir / "refit"
    assert capsys.readouterr().out.split() == [str(tune_dir), str(refit)]
    metrics = json.loads((refit / "metrics.json").read_text())
    search = metrics["search"]
    assert search["trials"] == 2 and search["states"]["COMPLETE"] == 2 and search["sampler"] == "tpe"
    assert search["space"] == {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}
    assert search["best_params"]["optim.lr"] == yaml.safe_load((tune_dir / "best.yaml").read_text())["optim"]["lr"]
    card = (refit / "model_card.md").read_text()
    assert "## Hyperparameter search" in card and "2 trials (2 complete)" in card and "`optim.lr`" in card
    assert code == 0 and main(["vision", "evaluate", "--model", str(refit / "model.onnx")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    # a second refit of the same folder is refused before any trial runs
    one_line_error(capsys, ["vision", "tune", *app_args("vision", fast, bert), "--tune.trials", "3",
                            "--tune.space", str(space), "--run_dir", str(tune_dir), "--tune.refit"],
                   "holds a finished refit")
    assert trials_table(tune_dir).height == 2


def test_a_private_search_says_its_budget_is_per_trial(tmp_path, fast, bert):
    space = write_space(tmp_path / "space.yaml", {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}})
    tune_dir = tmp_path / "tune"
    assert main(["fraud", "tune", *app_args("fraud", fast, bert), "--privacy.epsilon", "4", "--baselines", "false",
                 "--tune.trials", "2", "--tune.space", str(space), "--run_dir", str(tune_dir), "--tune.refit"]) == 0
    search = json.loads((tune_dir / "refit" / "metrics.json").read_text())["search"]
    assert search["privacy"] == {"epsilon_per_trial": 4.0, "trials_trained": 2}
    card = (tune_dir / "refit" / "model_card.md").read_text()
    assert "**Privacy of the search:** each of the 2 trials trained with DP-SGD at epsilon 4.0" in card
