"""`auto` window geometry of a forecast fit: horizon and look-back from the sampling frequency.

The rules (numbers asserted by tests/apps/test_forecast_auto.py):

- The natural cycles of a frequency, in steps: below daily a day and a week (hourly: 24, 168;
  15 min: 96, 672), daily a week and a year (7, 365), weekly a year (52), monthly a year (12),
  quarterly a year (4), yearly none.
- `data.horizon`: one shortest cycle ahead (hourly 24, daily 7, weekly 52, monthly 12); 4 steps
  for yearly data, which has no cycle.
- `data.look_back`: two longest cycles (two weeks of hourly data: 336, the ETT protocol's
  look-back; two years of weekly data: 104), at least two horizons, at most 720 steps (longer
  windows add parameters to the linear maps faster than they add signal; the long-horizon
  benchmarks stop at 720), and at most half of what the shortest training part leaves after one
  horizon, so that at least half of it yields training windows; a capped value is rounded down
  to whole shortest cycles.
"""

from __future__ import annotations

from deepapps.apps.finance.forecast.series import freq_seconds, parse_freq
from deepapps.core.errors import ConfigError
from deepapps.core.training.auto import Choice, is_auto

MAX_LOOK_BACK = 720
NO_CYCLE_HORIZON = 4


def cycles(freq: str) -> list[int]:
    """Natural cycles of `freq` in steps, shortest first (empty for yearly data)."""
    n, unit = parse_freq(freq)
    per_year = {"mo": 12, "q": 4, "w": 52}
    if unit == "y":
        return []
    if unit in per_year:
        return [c] if (c := per_year[unit] // n) >= 2 else []
    seconds = freq_seconds(freq)
    if seconds < 86400:
        day = 86400 // seconds
        return [c for c in (day, 7 * day) if c >= 2]
    days = seconds // 86400
    return [c for c in (7 // days, 365 // days) if c >= 2]


def resolve_geometry(look_back, horizon, freq: str, shortest_train: int) -> list[Choice]:
    """The Choices for the `auto` ones of look_back and horizon.

    Args:
        look_back, horizon: the config values (ints, or `auto`).
        freq: the series' sampling interval (polars duration).
        shortest_train: time steps in the training part of the shortest series.
    """
    found = cycles(freq)
    choices = []
    if is_auto(horizon):
        horizon = found[0] if found else NO_CYCLE_HORIZON
        why = f"one cycle of {freq} data ahead" if found else f"{freq} data has no cycle: {NO_CYCLE_HORIZON} steps"
        choices.append(Choice("data.horizon", horizon, why))
    if is_auto(look_back):
        wanted = max(2 * found[-1] if found else 0, 2 * horizon)
        room = (shortest_train - horizon) // 2
        why = f"two cycles of {found[-1]} steps" if found and wanted == 2 * found[-1] else "two horizons"
        look_back = wanted
        if wanted > min(MAX_LOOK_BACK, room):
            limit = (f"at most {MAX_LOOK_BACK} steps" if MAX_LOOK_BACK <= room
                     else f"at most half of the {shortest_train} training steps after one horizon")
            look_back = min(MAX_LOOK_BACK, room)
            if found and look_back >= found[0]:
                look_back -= look_back % found[0]
                limit += f", in whole cycles of {found[0]}"
            look_back = max(look_back, 2)
            why = f"{why} ({wanted}), {limit}"
        choices.append(Choice("data.look_back", look_back, why))
    return choices


def check_geometry(look_back, horizon) -> None:
    """A one-line ConfigError unless look_back >= 2 and horizon >= 1 are integers (`auto` resolved)."""
    if is_auto(look_back) or is_auto(horizon):
        raise ConfigError("--data.look_back / --data.horizon auto: needs the data to choose from")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (look_back, horizon)) or look_back < 2 or horizon < 1:
        raise ConfigError(f"--data.look_back {look_back} / --data.horizon {horizon}: need integers L >= 2 and H >= 1")
