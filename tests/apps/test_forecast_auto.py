"""`auto` look-back and horizon of a forecast fit, from the sampling frequency."""

import polars as pl
import pytest
import yaml

from deepapps.apps.finance.forecast.auto import check_geometry, cycles, resolve_geometry
from deepapps.core.cli import main
from deepapps.core.errors import ConfigError

TINY = "apps/finance/forecast/configs/tiny.yaml"
FAST = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2"]


def geometry(freq: str, n_train: int) -> tuple[int, int]:
    chosen = {c.field: c.value for c in resolve_geometry("auto", "auto", freq, n_train)}
    return chosen["data.look_back"], chosen["data.horizon"]


def test_cycles_of_each_frequency():
    assert cycles("1h") == [24, 168]
    assert cycles("15m") == [96, 672]
    assert cycles("1d") == [7, 365]
    assert cycles("1w") == [52]
    assert cycles("1mo") == [12]
    assert cycles("1q") == [4]
    assert cycles("1y") == []


def test_geometry_from_the_frequency():
    assert geometry("1h", 8640) == (336, 24)  # ETTh1: the ETT protocol's look-back
    assert geometry("1w", 1600) == (104, 52)  # the embedded weekly CO2 demo, as before
    assert geometry("1mo", 84) == (24, 12)
    assert geometry("1y", 50) == (8, 4)


def test_look_back_capped_in_whole_cycles():
    assert geometry("15m", 34560) == (672, 96)  # 1344 wanted, 720 cap, whole days
    assert geometry("1d", 766) == (378, 7)  # half of (766 - 7), whole weeks
    assert geometry("1h", 300) == (120, 24)


def test_given_values_are_kept():
    assert resolve_geometry(48, 12, "1h", 8640) == []
    chosen = resolve_geometry(48, "auto", "1h", 8640)
    assert [(c.field, c.value) for c in chosen] == [("data.horizon", 24)]


@pytest.mark.parametrize("look_back, horizon", [("auto", 8), (1, 8), ("big", 8), (32, 0)])
def test_bad_geometry_is_one_line(look_back, horizon):
    with pytest.raises(ConfigError):
        check_geometry(look_back, horizon)


def test_fit_resolves_and_saves_auto(tmp_path, capsys):
    hours = pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 3, 1), "1h", eager=True)
    n = len(hours)
    pl.DataFrame({"ts": hours, "load": [float(i % 24) + 0.01 * i for i in range(n)]}).write_csv(tmp_path / "h.csv")
    run = tmp_path / "run"
    argv = ["forecast", "fit", "--config", TINY, "--data.path", str(tmp_path / "h.csv"), "--data.timestamp", "ts",
            "--data.look_back", "auto", "--data.horizon", "auto", *FAST, "--run_dir", str(run)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "auto: --data.horizon 24" in err and "auto: --data.look_back 336" in err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["look_back"] == 336 and saved["data"]["horizon"] == 24
    assert "Auto choices" in (run / "model_card.md").read_text()
