"""`deepapps <app> tune`: a hyperparameter search over an app's fit config, with Optuna.

One search:

    the fit config (parsed as `fit` parses it) + a search space (dotted config fields ->
    distributions, checked against the app's config class) -> an Optuna study in a storage
    (SQLite in the tune folder by default; an RDB URL that workers on many machines share)
    -> trials: each runs `core.training.fit.train` alone in trials/<number>/ (no checkpoints,
    ONNX, plots or model card), reports the validation monitor every epoch (pruning) and
    returns its best value -> trials.csv, best.yaml, plots/ -> with --tune.refit, `fit` of
    best.yaml in refit/, with the search in its metrics.json and model card.

The objective is the app's validation monitor (`trainer.monitor`, `trainer.monitor_mode`); a
trial never reads the test split. A trial that fails is recorded as failed with its one-line
reason and the search goes on. A search that is killed resumes where it stopped when run again
on the same storage (same --run_dir, or the same --tune.storage and --tune.study).

Torch and Optuna are imported inside the functions that need them: `deepapps <app> tune --help`
only reads TuneConfig.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import os
import socket
import sys
import time
import types
import warnings
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin, get_type_hints

from deepapps.core.errors import ConfigError, DataError, DeepappsError

if TYPE_CHECKING:
    import optuna

    from deepapps.core.registry import AppSpec

log = logging.getLogger("deepapps")

SAMPLERS = ("tpe", "grid", "random")
PRUNERS = ("median", "hyperband", "none")
DISTRIBUTIONS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
                 "categorical": {"choices"}}
#: fields a search must not change: they name the run, or they are the objective itself
NOT_SEARCHABLE = {"run_dir", "resume", "trainer.monitor", "trainer.monitor_mode"}
INTERRUPTED = "interrupted"  # user attr of a trial cut short by a signal or a killed worker


@dataclass
class TuneConfig:
    """Hyperparameter search settings (`--tune.*`)."""

    trials: int = 20
    """Trials the study holds when the search ends, counted over every worker and every earlier
    (killed, resumed) run of the same study; a grid with fewer points ends when it is covered."""
    timeout: float | None = None
    """Seconds this worker searches at most: no trial starts after it, and a trial still running
    then stops at its next validation (keeping its best epoch). null: no limit."""
    sampler: str = "tpe"
    """`tpe` (Bayesian optimisation, Optuna's TPE), `grid` (every combination of the space: each
    field needs finite choices: categorical, int, or float with `step`) or `random`."""
    pruner: str = "median"
    """Stop bad trials early from the validation monitor of each epoch: `median` (below the median
    of earlier trials at the same epoch), `hyperband` or `none`."""
    space: str | None = None
    """Search space YAML (dotted config field -> distribution); null: the app's
    configs/search_space.yaml."""
    storage: str | None = None
    """Optuna storage URL; null: sqlite:///<tune folder>/study.db. An RDB URL (postgresql://...,
    mysql+pymysql://...) lets many workers on many machines share one study."""
    study: str | None = None
    """Study name in the storage; null: the app's name."""
    refit: bool = False
    """After the search, fit the best config in <tune folder>/refit: the full run (ONNX, test
    metrics, plots), with the search in its metrics.json and model card."""
    seed: int | None = None
    """Sampler seed; null: the fit's seed plus the number of trials the study already holds
    (workers started at the same moment draw alike: give each its own)."""


@dataclass(frozen=True)
class Dimension:
    """One searched field: an Optuna distribution over a config field."""

    field: str
    type: str  # float, int or categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()

    def spec(self) -> dict:
        """The YAML form (what the model card and metrics.json show)."""
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    def suggest(self, trial: optuna.Trial):
        if self.type == "categorical":
            return trial.suggest_categorical(self.field, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.field, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.field, self.low, self.high, step=self.step, log=self.log)

    def grid(self) -> list | None:
        """Every value a grid search tries; None when the values are not finite (float without step)."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int":
            return list(range(self.low, self.high + 1, self.step or 1))
        if self.step is None:
            return None
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(n)]


@dataclass
class Search:
    """What a finished search leaves: its folder, best.yaml (None when no trial completed) and
    the summary the refit's metrics.json and model card carry."""

    tune_dir: Path
    best_yaml: Path | None
    summary: dict

    @property
    def refit_dir(self) -> Path:
        return self.tune_dir / "refit"


# --- the search space ----------------------------------------------------------------------


def read_space(path: Path, config_class: type, app: str) -> list[Dimension]:
    """The search space of `path`, each field checked against the app's config class.

    Raises:
        ConfigError: one line naming the file and the field (missing or unreadable file, not a
            mapping, an empty space, an unknown field, a section, a field that cannot be searched,
            an unknown distribution, a bad bound, a value the field's type does not take).
    """
    import yaml

    where = f"--tune.space {path}"
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: not a readable YAML text file ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{where}: not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if data is None or data == {}:
        raise ConfigError(f"{where}: the space is empty; map at least one config field to a distribution, "
                          "e.g. `optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}`")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: not a mapping of config fields to distributions (found {type(data).__name__})")
    return [_dimension(where, str(name), spec, config_class, app) for name, spec in data.items()]


def _dimension(where: str, name: str, spec: object, config_class: type, app: str) -> Dimension:
    hint = _field_hint(where, name, config_class, app)
    if name in NOT_SEARCHABLE:
        raise ConfigError(f"{where}: {name} cannot be searched (it names the run or is the objective)")
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: {name}: give a mapping with `type` (float, int or categorical), "
                          "e.g. {type: float, low: 0.0, high: 0.5}")
    kind = spec["type"]
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: {name}: unknown type {kind!r}; choose float, int or categorical")
    unknown = set(spec) - DISTRIBUTIONS[kind] - {"type"}
    if unknown:
        raise ConfigError(f"{where}: {name}: unknown key {sorted(unknown)[0]!r} for type {kind} "
                          f"(keys: {', '.join(sorted(DISTRIBUTIONS[kind]))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: {name}: `choices` must be a non-empty list")
        choices = [_coerce(where, name, hint, c) for c in choices]
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"{where}: {name}: `choices` repeats a value")
        return Dimension(name, kind, choices=tuple(choices))
    number = int if kind == "int" else float
    if not _accepts(hint, number(1)):
        raise ConfigError(f"{where}: {name}: a {kind} range does not fit the field (type {_type_name(hint)})")
    low, high, step = (_number(where, name, key, spec.get(key), kind) for key in ("low", "high", "step"))
    log_scale = spec.get("log", False)
    if low is None or high is None:
        raise ConfigError(f"{where}: {name}: a {kind} range needs `low` and `high`")
    if not isinstance(log_scale, bool):
        raise ConfigError(f"{where}: {name}: `log` must be true or false")
    if not low < high:
        raise ConfigError(f"{where}: {name}: `low` ({low}) must be smaller than `high` ({high})")
    if log_scale and low <= 0:
        raise ConfigError(f"{where}: {name}: a log range needs `low` > 0 (got {low})")
    if step is not None and (step <= 0 or log_scale):
        raise ConfigError(f"{where}: {name}: `step` must be positive and cannot go with `log`")
    return Dimension(name, kind, low, high, log_scale, step)


def _field_hint(where: str, name: str, config_class: type, app: str):
    """The type of dotted field `name` of `config_class`, or a ConfigError naming it."""
    cls, parts = config_class, name.split(".")
    for depth, part in enumerate(parts):
        hints = get_type_hints(cls)
        names = [f.name for f in fields(cls)]
        if part not in names:
            prefix = ".".join(parts[:depth])
            known = [f"{prefix}.{n}" if prefix else n for n in names]
            close = difflib.get_close_matches(name, _all_fields(config_class), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (fields here: {', '.join(known)})"
            raise ConfigError(f"{where}: {name} is not a field of the {app} config{hint}")
        kind = hints[part]
        if depth < len(parts) - 1:
            if not is_dataclass(kind):
                raise ConfigError(f"{where}: {name}: {'.'.join(parts[:depth + 1])} is a value, not a section")
            cls = kind
        elif is_dataclass(kind):
            raise ConfigError(f"{where}: {name} is a section of the {app} config; name one of its fields")
    return kind


def _all_fields(cls: type, prefix: str = "") -> list[str]:
    out = []
    for name, kind in get_type_hints(cls).items():
        if name not in {f.name for f in fields(cls)}:
            continue
        out += _all_fields(kind, f"{prefix}{name}.") if is_dataclass(kind) else [prefix + name]
    return out


def _accepts(hint, value) -> bool:
    """Whether a config field of type `hint` takes `value` (scalars only: lists are not searched)."""
    if get_origin(hint) in (Union, types.UnionType):
        args = get_args(hint)
        if isinstance(value, str) and str in args and ({int, float} & set(args)):
            return value == "auto"  # a number-or-`auto` field takes no other word
        return any(_accepts(arg, value) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return hint is Any


def _coerce(where: str, name: str, hint, value):
    """A categorical choice as the field takes it (YAML reads `1e-3` as text: made a number)."""
    if isinstance(value, str) and not _accepts(hint, value):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer() and not _accepts(hint, value) and _accepts(hint, int(value)):
        value = int(value)
    if not _accepts(hint, value):
        raise ConfigError(f"{where}: {name}: choice {value!r} does not fit the field (type {_type_name(hint)})")
    return value


def _number(where: str, name: str, key: str, value, kind: str):
    if value is None:
        return None
    if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as text
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {name}: `{key}` must be a number (got {value!r})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name}: `{key}` must be a finite number (got {value!r})")
    if kind == "int":
        if float(value) != int(value):
            raise ConfigError(f"{where}: {name}: `{key}` of an int range must be an integer (got {value})")
        return int(value)
    return float(value)


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def grid_space(space: list[Dimension], trials: int, where: str) -> dict[str, list]:
    """The grid of `space` (field -> values), refused when a field has no finite values or the grid
    has more points than `trials`."""
    grid = {}
    for dim in space:
        values = dim.grid()
        if values is None:
            raise ConfigError(f"{where}: {dim.field}: a grid search needs finite values; "
                              "give the float range a `step` or list `choices`")
        grid[dim.field] = values
    size = math.prod(len(v) for v in grid.values())
    if size > trials:
        raise ConfigError(f"{where}: the grid has {size} points, more than --tune.trials {trials}; "
                          "raise --tune.trials or shrink the grid")
    return grid


def apply_params(config: dict, params: dict) -> dict:
    """A copy of the nested config dict with the dotted `params` set."""
    out = copy.deepcopy(config)
    for name, value in params.items():
        *sections, key = name.split(".")
        node = out
        for part in sections:
            node = node.setdefault(part, {})
        node[key] = value
    return out


# --- the study -----------------------------------------------------------------------------


def default_tune_dir(app: str) -> Path:
    return Path("runs") / app / f"tune-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def shown_url(url: str) -> str:
    """A storage URL for messages and reports: its password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an URL sqlalchemy parses: show it as given
        return url


def open_storage(url: str):
    """An Optuna RDB storage (SQLite, PostgreSQL, MySQL) with heartbeats, so a trial of a worker
    killed on another machine is failed after a grace period and retried.

    Raises:
        ConfigError: the URL cannot be opened (one line; the password is not shown).
    """
    import optuna

    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeats are marked experimental
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=60, grace_period=180,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
        except Exception as exc:  # sqlalchemy and the DB drivers raise many types
            # workers started together on a new database race to create its tables: the loser retries
            if attempt < 4 and any(text in str(exc) for text in ("already exists", "is locked", "UNIQUE constraint")):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ConfigError(f"--tune.storage {shown_url(url)}: cannot be opened ({_reason(exc)})") from None


def make_sampler(name: str, grid: dict | None, seed: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant_liar is marked experimental
        if name == "grid":
            return optuna.samplers.GridSampler(grid, seed=seed)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # constant_liar: parallel workers do not all pick the point a running trial already has
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(name: str, max_epochs: int):
    import optuna

    if name == "median":  # never before 3 trials have finished, nor on the first (noisy) epoch
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1))
    return optuna.pruners.NopPruner()


def open_study(storage, name: str, app: str, monitor: str, direction: str, sampler_name: str, grid, pruner,
               seed: int | None, base_seed: int) -> optuna.Study:
    """Create the study or load the one of that name (a resumed search, another worker's)."""
    import optuna

    try:
        existing = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        attrs = existing.user_attrs
        if attrs.get("app", app) != app or attrs.get("objective", monitor) != monitor:
            raise ConfigError(f"--tune.study {name}: the study in {shown_url(storage.url)} belongs to another search "
                              f"({attrs.get('app')}, {attrs.get('objective')}); give another --tune.study")
        if existing.direction.name.lower() != direction:
            raise ConfigError(f"--tune.study {name}: the study {existing.direction.name.lower()}s, this search "
                              f"{direction}s {monitor}; give another --tune.study")
    already = len(existing.trials) if existing is not None else 0
    sampler = make_sampler(sampler_name, grid, base_seed + already if seed is None else seed)
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if existing is None:
        for key, value in {"app": app, "objective": monitor, "sampler": sampler_name}.items():
            study.set_user_attr(key, value)
    return study


def counts_toward_target(trial) -> bool:
    """Whether a trial is one of the study's --tune.trials: finished, running or waiting to run,
    but not cut short (a killed worker's trial is retried instead)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return bool(trial.user_attrs.get("fail_reason")) and not trial.user_attrs.get(INTERRUPTED)
    return True


def retry_interrupted_trials(study, storage) -> int:
    """Run again the trials that were cut short: those a signal stopped, and the running trials of
    dead workers on this machine (a killed search run again), which are failed first. Heartbeats do
    the same for workers elsewhere, after their grace period. Returns the number of retries queued."""
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != host or _alive(int(worker.get("pid", -1))):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
            storage.set_trial_user_attr(trial_id, "fail_reason", f"interrupted: worker {worker['pid']} stopped")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # another worker failed it first
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    queued = 0
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED) and trial.number not in retried:
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)(study, trial)
            log.info("trial %d was cut short: its values are run again", trial.number)
            queued += 1
    return queued


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# --- one trial -----------------------------------------------------------------------------


class TrialFailed(Exception):
    """A trial that failed; its one-line reason is the trial's `fail_reason` user attr."""


def _reason(exc: BaseException) -> str:
    """One line: a DeepappsError's message, else the exception's type and first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if isinstance(exc, DeepappsError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def pruning_callback(trial, monitor: str, mode: str, deadline: float | None):
    """A Lightning callback: after each validation epoch, report `monitor` to the trial, keep its
    best value, and stop training when the pruner says so or the search's time is up."""
    from pytorch_lightning.callbacks import Callback

    class Pruning(Callback):
        def __init__(self) -> None:
            self.best: float | None = None
            self.best_epoch: int | None = None
            self.pruned_epoch: int | None = None
            self.timed_out = False
            self.last: float | None = None

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            value = trainer.callback_metrics.get(monitor)
            if value is None or not math.isfinite(float(value)):
                return
            value, epoch = float(value), trainer.current_epoch
            self.last = value
            if self.best is None or (value > self.best if mode == "max" else value < self.best):
                self.best, self.best_epoch = value, epoch
            trial.report(value, epoch)
            if trial.should_prune():
                self.pruned_epoch = epoch
                trainer.should_stop = True
            elif deadline is not None and time.monotonic() >= deadline:
                self.timed_out = True
                trainer.should_stop = True

    return Pruning()


def make_objective(app: AppSpec, config: dict, space: list[Dimension], tune_dir: Path, deadline: float | None):
    """The objective: one trial = the fit config with the trial's values, trained alone in
    trials/<number>/; returns the best validation monitor of its epochs."""
    import optuna
    import yaml

    from deepapps.core.config import check_ranges, from_dict
    from deepapps.core.training.fit import train

    config_class = app.load_config_class()
    worker = {"host": socket.gethostname(), "pid": os.getpid()}

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        if trial.user_attrs.get(INTERRUPTED):  # a retry starts with the attrs of the trial it retries
            trial.set_user_attr(INTERRUPTED, False)
            trial.set_user_attr("fail_reason", None)
        params = {dim.field: dim.suggest(trial) for dim in space}
        trial_dir = tune_dir / "trials" / str(trial.number)
        try:
            values = apply_params(config, params) | {"run_dir": str(trial_dir), "resume": False}
            cfg = from_dict(config_class, values)
            check_ranges(cfg)
            monitor, mode = cfg.trainer.monitor, cfg.trainer.monitor_mode
            pruning = pruning_callback(trial, monitor, mode, deadline)
            config_yaml = yaml.safe_dump(values, sort_keys=False)
            train(app, cfg, values, config_yaml, trial_dir, callbacks=[pruning], checkpoints=False)
            if pruning.best is None:
                raise DataError(f"the monitor {monitor} was never logged (a validation split too small, "
                                "or a --trainer.monitor this app does not log)")
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED, True)
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise
        except optuna.TrialPruned:
            raise
        except Exception as exc:  # any error of one trial is that trial's, not the search's
            trial.set_user_attr("fail_reason", _reason(exc))
            raise TrialFailed(_reason(exc)) from None
        trial.set_user_attr("best_epoch", pruning.best_epoch + 1)
        if pruning.pruned_epoch is not None:
            raise optuna.TrialPruned(f"pruned after epoch {pruning.pruned_epoch + 1}: {monitor} {pruning.last:.4f}")
        if pruning.timed_out:
            trial.set_user_attr("stopped", "the search's --tune.timeout")
        return pruning.best

    return objective


# --- the search ----------------------------------------------------------------------------


def tune(app: AppSpec, cfg, config: dict, options: TuneConfig) -> Search:
    """Run (or resume) a search; returns its folder, best.yaml and summary.

    Args:
        app: the app whose fit config is searched.
        cfg: the fit config (dataclass) the space's values are set in; `run_dir` is the tune folder.
        config: the same config as a nested dict.
        options: the --tune.* settings.

    Raises:
        ConfigError: bad options, space or storage (before any trial), or no trial completed.
    """
    _check_options(options, cfg)
    if epsilon := trial_epsilon(config):
        log.warning("each trial trains with DP-SGD at epsilon %s on the same data: the search as a whole spends more "
                    "than one trial's budget (the model card says so)", epsilon)
    space_path = Path(options.space) if options.space else app.configs_dir / "search_space.yaml"
    where = f"--tune.space {space_path}"
    space = read_space(space_path, app.load_config_class(), app.name)
    grid = grid_space(space, options.trials, where) if options.sampler == "grid" else None
    target = min(options.trials, math.prod(len(v) for v in grid.values())) if grid else options.trials
    path = str(cfg.data.path)
    if not path.startswith("builtin:") and not Path(path).exists():
        raise DataError(f"--data.path {path}: no such file or folder")
    from deepapps.core.training.auto import resolve_before_search

    resolve_before_search(app, cfg, config)  # `auto` fields chosen from the data once, for every trial

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial; no tracebacks
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    tune_dir = Path(cfg.run_dir or default_tune_dir(app.name))
    if options.storage is None:
        tune_dir.mkdir(parents=True, exist_ok=True)
    url = options.storage or f"sqlite:///{(tune_dir / 'study.db').resolve()}"
    storage = open_storage(url)
    direction = "maximize" if cfg.trainer.monitor_mode == "max" else "minimize"
    study = open_study(storage, options.study or app.name, app.name, cfg.trainer.monitor, direction, options.sampler,
                       grid, make_pruner(options.pruner, cfg.trainer.max_epochs), options.seed, cfg.seed)
    tune_dir.mkdir(parents=True, exist_ok=True)
    if options.refit:
        _check_refit_dir(tune_dir / "refit")
    deadline = time.monotonic() + options.timeout if options.timeout else None
    objective = make_objective(app, config, space, tune_dir, deadline)
    log.info("tune folder %s; study %s in %s; %s sampler, %s pruner, %s %s, %d trials",
             tune_dir, study.study_name, shown_url(url), options.sampler, options.pruner, direction,
             cfg.trainer.monitor, target)
    progress = Progress(target, cfg.trainer.monitor)
    ran = 0
    try:
        progress.start(study)
        while True:
            retry_interrupted_trials(study, storage)
            counted = sum(counts_toward_target(t) for t in study.get_trials(deepcopy=False))
            if counted >= target or (deadline is not None and time.monotonic() >= deadline):
                break
            if grid is not None and study.sampler.is_exhausted(study):
                break
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=True,
                           callbacks=[progress.update])
            ran += 1
            write_trials_csv(study, tune_dir / "trials.csv", space)
    finally:
        progress.stop()
    return finish(app, study, cfg, config, space, options, url, tune_dir, ran)


def finish(app: AppSpec, study, cfg, config: dict, space: list[Dimension], options: TuneConfig, url: str,
           tune_dir: Path, ran: int) -> Search:
    """trials.csv, best.yaml, the plots and the summary of the study as it stands."""
    import yaml
    from optuna.trial import TrialState

    from deepapps.core.runtime.io import write_text

    write_trials_csv(study, tune_dir / "trials.csv", space)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    states = {state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}
    states["INTERRUPTED"] = sum(t.state == TrialState.FAIL and not counts_toward_target(t) for t in trials)
    states["FAIL"] -= states["INTERRUPTED"]
    summary = {
        "app": app.name, "study": study.study_name, "storage": shown_url(url), "sampler": options.sampler,
        "pruner": options.pruner, "objective": cfg.trainer.monitor, "direction": study.direction.name.lower(),
        "trials": sum(counts_toward_target(t) for t in trials), "ran_here": ran, "states": states,
        "best_trial": None, "best_value": None, "best_params": {},
        "space": {dim.field: dim.spec() for dim in space},
        "failures": [{"trial": t.number, "reason": t.user_attrs["fail_reason"]}
                     for t in trials if t.state == TrialState.FAIL and counts_toward_target(t)][:10],
        "tune_dir": str(tune_dir), "trials_csv": str(tune_dir / "trials.csv"),
    }
    if epsilon := trial_epsilon(config):
        summary["privacy"] = {"epsilon_per_trial": epsilon, "trials_trained": summary["trials"]}
    best_yaml = None
    if complete:
        best = study.best_trial
        summary |= {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
        values = apply_params(config, best.params) | {"run_dir": None, "resume": False}
        header = (f"# best of study {study.study_name} ({len(trials)} trials): trial {best.number}, "
                  f"{cfg.trainer.monitor} {best.value:.6g}\n# deepapps {app.name} fit --config best.yaml\n")
        best_yaml = write_text(tune_dir / "best.yaml", header + yaml.safe_dump(values, sort_keys=False))
        summary["plots"] = write_plots(study, tune_dir / "plots", cfg.trainer.monitor)
    log.info("study %s: %s; best %s", study.study_name, ", ".join(f"{n} {s.lower()}" for s, n in states.items() if n),
             f"{summary['best_value']:.4f} (trial {summary['best_trial']})" if complete else "none")
    if not complete and not any(t.state == TrialState.RUNNING for t in trials):
        failures = summary["failures"]
        why = f"; trial {failures[0]['trial']}: {failures[0]['reason']}" if failures else ""
        raise ConfigError(f"deepapps {app.name} tune: no trial completed in {tune_dir}{why}")
    return Search(tune_dir, best_yaml, summary)


def trial_epsilon(config: dict) -> float | None:
    """The DP-SGD epsilon every trial trains at (`privacy.epsilon` of the fit config), or None."""
    privacy = config.get("privacy") if isinstance(config.get("privacy"), dict) else {}
    return privacy.get("epsilon")


def _check_options(options: TuneConfig, cfg) -> None:
    if options.trials < 1:
        raise ConfigError(f"--tune.trials {options.trials}: must be at least 1")
    if options.timeout is not None and not options.timeout > 0:
        raise ConfigError(f"--tune.timeout {options.timeout}: must be positive (seconds)")
    if options.sampler not in SAMPLERS:
        raise ConfigError(f"--tune.sampler {options.sampler}: choose {', '.join(SAMPLERS)}")
    if options.pruner not in PRUNERS:
        raise ConfigError(f"--tune.pruner {options.pruner}: choose {', '.join(PRUNERS)}")
    if cfg.resume:
        raise ConfigError("--resume: not for tune; a search resumes by itself when run again on the same "
                          "--run_dir (or --tune.storage and --tune.study)")
    if cfg.trainer.monitor_mode not in ("max", "min"):
        raise ConfigError(f"--trainer.monitor_mode {cfg.trainer.monitor_mode}: choose max or min")


def _check_refit_dir(refit: Path) -> None:
    """A finished refit is not overwritten; one that was cut short is made again."""
    import shutil

    if (refit / "metrics.json").is_file():
        raise ConfigError(f"--tune.refit: {refit} holds a finished refit; move it away to refit again "
                          f"(or fit best.yaml yourself: `fit --config {refit.parent / 'best.yaml'}`)")
    if refit.exists():
        log.info("removing %s: a refit that was cut short", refit)
        shutil.rmtree(refit)


class Progress:
    """A Rich progress bar with the best value so far (on a terminal), else one line per trial."""

    def __init__(self, target: int, monitor: str) -> None:
        self.target, self.monitor, self.bar, self.task = target, monitor, None, None
        self.started = time.monotonic()

    def start(self, study) -> None:
        if not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(TextColumn("[bold]tune[/bold]"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[best]}"), TimeElapsedColumn(), console=Console(stderr=True))
        self.task = self.bar.add_task("tune", total=self.target, completed=self._counted(study), best=self._best(study))
        self.bar.start()

    def update(self, study, trial) -> None:
        line = self._line(study, trial) if trial is not None else None
        if self.bar is None:
            if line:
                print(line, file=sys.stderr, flush=True)
            return
        if line:
            self.bar.console.print(line)
        self.bar.update(self.task, completed=self._counted(study), best=self._best(study))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _counted(self, study) -> int:
        return min(self.target, sum(counts_toward_target(t) and t.state.is_finished()
                                    for t in study.get_trials(deepcopy=False)))

    def _best(self, study) -> str:
        try:
            best = study.best_trial
        except ValueError:  # no completed trial yet
            return f"best {self.monitor}: -"
        return f"best {self.monitor}: {best.value:.4f} (trial {best.number})"

    def _line(self, study, trial) -> str:
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        seconds = f"{trial.duration.total_seconds():.1f}s" if trial.duration else ""
        state = trial.state.name.lower()
        if trial.state.name == "COMPLETE":
            what = f"{self.monitor} {trial.value:.4f}"
        elif trial.state.name == "PRUNED":
            epochs = max(trial.intermediate_values, default=-1) + 1
            what = f"after epoch {epochs}"
        else:
            what = trial.user_attrs.get("fail_reason", "")
        return f"trial {trial.number} {state}: {what} | {params} | {seconds} | {self._best(study)}"


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- outputs -------------------------------------------------------------------------------


def write_trials_csv(study, path: Path, space: list[Dimension]) -> Path:
    """One row per trial: number, state, value, the searched fields, times, best epoch, reason."""
    import polars as pl

    from deepapps.core.runtime.io import atomic_write

    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"number": t.number, "state": t.state.name, "value": t.value}
        row |= {dim.field: _csv_value(t.params.get(dim.field)) for dim in space}
        row |= {
            "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "seconds": round(t.duration.total_seconds(), 2) if t.duration else None,
            "epochs_reported": len(t.intermediate_values),
            "best_epoch": t.user_attrs.get("best_epoch"),
            "reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("stopped"),
            "retry_of": (t.system_attrs.get("retry_history") or [None])[-1],
            "worker": "{host}:{pid}".format(**t.user_attrs["worker"]) if "worker" in t.user_attrs else None,
        }
        rows.append(row)
    schema = {"number": pl.Int64, "state": pl.String, "value": pl.Float64}
    table = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame(schema=schema)
    return atomic_write(path, lambda tmp: table.write_csv(tmp))


def _csv_value(value):
    return value if value is None or isinstance(value, (int, float)) else str(value)


def write_plots(study, folder: Path, monitor: str) -> list[str]:
    """Optimisation history, parameter importances and parallel coordinates (Optuna's matplotlib
    plots); a plot the study cannot draw yet (too few trials) is skipped with a log line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    from deepapps.core.runtime.io import atomic_write

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    wanted = {"optimization_history": plots.plot_optimization_history,
              "parallel_coordinate": plots.plot_parallel_coordinate}
    if len(complete) >= 2 and len({tuple(sorted(t.params.items(), key=str)) for t in complete}) >= 2:
        wanted["param_importances"] = plots.plot_param_importances
    written = []
    for name, draw in wanted.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(study, target_name=monitor)
            figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            atomic_write(folder / f"{name}.png", lambda tmp: figure.savefig(tmp, format="png", dpi=100))
            plt.close(figure)
            written.append(f"plots/{name}.png")
        except Exception as exc:  # an Optuna plot that cannot be drawn for this study
            log.info("plot %s skipped: %s", name, _reason(exc))
    return written
