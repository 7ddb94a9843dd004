"""`deepapps <app> <command>`: one grammar for every app.

Commands that train (fit, validate, test, export) import torch lazily; the serving
commands (evaluate, predict) never do, so a torch-free install can run them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

from deepapps.core.errors import ConfigError, DeepappsError
from deepapps.core.registry import AppSpec, discover_apps, get_app

TOOLS = {
    "serve": ("deepapps.core.serving.server:main", "serve any deepapps ONNX model over HTTP (micro-batching, metrics)"),
    "import": ("deepapps.core.importer:main", "wrap a classifier exported by another framework into a deepapps model"),
}

COMMANDS = {
    "fit": "train on the data, export the best checkpoint to ONNX and evaluate that file",
    "tune": "hyperparameter search over the fit config (Optuna: TPE, grid or random; pruning; resumable)",
    "validate": "metrics of a checkpoint on the validation split (torch)",
    "test": "metrics of a checkpoint on the test split (torch)",
    "export": "checkpoint -> ONNX with metadata, parity-checked against torch",
    "evaluate": "metrics of an ONNX model on a data split (ONNX Runtime, no torch)",
    "predict": "predict with an ONNX model (ONNX Runtime, no torch)",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # noqa: D102
        raise ConfigError(f"{self.prog}: {message}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` and clean-up runs."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `deepapps` console script."""
    from deepapps.core.runtime.io import remove_pending

    argv = list(sys.argv[1:] if argv is None else argv)
    # `serve` leaves SIGTERM to uvicorn (graceful shutdown, then the default action)
    handle_term = threading.current_thread() is threading.main_thread() and argv[:1] != ["serve"]
    previous = signal.signal(signal.SIGTERM, _terminate) if handle_term else None
    try:
        return _dispatch(argv)
    except DeepappsError as exc:
        print(f"deepapps: error: {_display(_one_line(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("deepapps: terminated" if isinstance(exc, Terminated) else "deepapps: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # e.g. `deepapps ... | head`
        sys.stderr.close()
        return 0
    finally:
        remove_pending()  # a write a signal or a native panic cut short leaves no temporary file
        if handle_term:
            signal.signal(signal.SIGTERM, previous)


def _one_line(exc: BaseException) -> str:
    """The message; for an error re-raised by a DataLoader worker, its original last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    return last.split("Error: ", 1)[1] if len(lines) > 1 and "Error: " in last else lines[0]


def _dispatch(argv: list[str]) -> int:
    apps = discover_apps()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: deepapps <app> <command> [options]\n\napps:")
        for spec in apps.values():
            print(f"  {spec.name:<12} {spec.help}")
        print("\ncommands (deepapps <app> --help):")
        for name, text in COMMANDS.items():
            print(f"  {name:<12} {text}")
        print("\nother commands (deepapps <command> --help):")
        for name, (_, text) in TOOLS.items():
            print(f"  {name:<12} {text}")
        return 0
    if argv[0] in ("-V", "--version"):
        from deepapps.core import __version__

        print(f"deepapps {__version__}")
        return 0
    if argv[0] in TOOLS:
        module, _, function = TOOLS[argv[0]][0].partition(":")
        import importlib

        return getattr(importlib.import_module(module), function)(argv[1:])
    return run_app(get_app(argv[0]), argv[1:])


def run_app(app: AppSpec, argv: list[str]) -> int:
    """Run `command` of `app` (also the body of `python -m deepapps.apps.<app>`)."""
    extra = {c.name: c for c in app.commands}
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: deepapps {app.name} <command> [options]\n\n{app.help}\n\ncommands:")
        for name, text in (COMMANDS | {n: c.help for n, c in extra.items()}).items():
            print(f"  {name:<10} {text}")
        print(f"\n`deepapps {app.name} <command> --help` lists the options of a command.")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS and command not in extra:
        choices = ", ".join([*COMMANDS, *extra])
        raise ConfigError(f"unknown command {command!r} for {app.name}; choose from {choices}")
    _setup_logging()
    if command in extra:
        return extra[command].load()(app, rest)
    return {
        "fit": _fit, "tune": _tune, "validate": _stage, "test": _stage, "export": _export,
        "evaluate": _evaluate, "predict": _predict,
    }[command](app, command, rest)


# --- training side (torch) -------------------------------------------------------------


def config_parser(app: AppSpec, command: str, with_ckpt: bool = False, base_yaml: bool = True):
    """jsonargparse parser over the app's config dataclass; the app's default.yaml is the base."""
    from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(
        prog=f"deepapps {app.name} {command}", exit_on_error=False, allow_abbrev=False,
        default_config_files=[str(app.default_config)] if base_yaml and app.default_config.is_file() else [],
        description=COMMANDS[command],
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (e.g. configs/tiny.yaml)")
    if with_ckpt:
        parser.add_argument("--ckpt", type=str, required=True, help="Lightning checkpoint (.ckpt)")
        parser.add_argument("--out", type=str | None, default=None, help="output file")
        parser.add_argument("--fp16", type=bool, default=False, help="also write a half-precision copy (GPU)")
        parser.add_argument("--int8", type=bool, default=False,
                            help="also write <out>.int8.onnx (the app's int8 method: static QDQ for conv "
                                 "networks, dynamic for transformers), refused beyond --int8_tolerance on validation")
    parser.add_class_arguments(app.load_config_class(), as_group=False)
    if command == "tune":
        from deepapps.core.tuning import TuneConfig

        parser.add_class_arguments(TuneConfig, nested_key="tune")
    return parser


def parse_config(app: AppSpec, command: str, argv: list[str], with_ckpt: bool = False):
    """(namespace, config dataclass, config dict) from the command line."""
    from argparse import ArgumentError

    from deepapps.core.config import check_ranges, from_dict

    for path in _options(argv, "--config"):
        _check_yaml(path)

    saved = {}
    if with_ckpt:  # a --ckpt URL: fetched into the local cache
        argv = [_localize(arg) if prev == "--ckpt" else arg for prev, arg in zip(["", *argv], argv)]
        argv = [f"--ckpt={_localize(arg[7:])}" if arg.startswith("--ckpt=") else arg for arg in argv]
    if with_ckpt and _option(argv, "--ckpt"):  # the checkpoint's config is the base
        from deepapps.core.training.checkpoints import config_values, read_checkpoint

        saved = config_values(app, read_checkpoint(_option(argv, "--ckpt")))
    parser = config_parser(app, command, with_ckpt, base_yaml=not saved)
    if saved:
        try:
            parser.set_defaults(_flatten(saved))
        except KeyError as exc:  # jsonargparse's NSKeyError: 'No action for key "data.x" ...'
            key = re.search(r'"([^"]+)"', str(exc))
            raise ConfigError(f"--ckpt {_option(argv, '--ckpt')}: not a {app.name} checkpoint "
                              f"(its config has {key.group(1) if key else exc})") from None
    flags = _bool_options(app.load_config_class()) | {"--fp16", "--int8"}
    if command == "tune":
        from deepapps.core.tuning import TuneConfig

        flags |= _bool_options(TuneConfig, "--tune.")
    argv = _bare_flags(argv, flags)
    try:
        namespace = parser.parse_args(argv)
    except (ArgumentError, ValueError, TypeError) as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ConfigError(f"deepapps {app.name} {command}: {detail}") from None
    skip = {"config", "ckpt", "out", "fp16", "int8", "tune", "__default_config__"}
    values = {k: v for k, v in namespace.as_dict().items() if k not in skip}
    cfg = from_dict(app.load_config_class(), values)
    check_ranges(cfg)
    return parser, namespace, cfg, values


def _fit(app: AppSpec, command: str, argv: list[str], search: dict | None = None) -> int:
    parser, namespace, cfg, values = parse_config(app, command, argv)
    if cfg.trainer.spark_processes:  # the same command in N DDP processes on Spark (core/training/spark_fit.py)
        if search is not None:
            raise ConfigError("--trainer.spark_processes: tune's refit trains in one process; drop it from the config")
        from deepapps.core.runtime import remote

        if cfg.trainer.spark_local_mode and not remote.is_remote(cfg.run_dir):
            _writable_folder(Path(cfg.run_dir or "runs"), "--run_dir")
        from deepapps.core.training.spark_fit import spark_fit

        print(spark_fit(app, argv, cfg))
        return 0
    run_url = _remote_fit_paths(cfg)
    _writable_folder(Path(cfg.run_dir or "runs"), "--run_dir")
    from deepapps.core.training.fit import fit

    yaml = parser.dump(namespace, skip_none=False)
    run_dir = fit(app, cfg, values, _strip_config_keys(yaml), search=search)
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0):  # another DDP rank: rank 0 prints and uploads the run folder
        return 0
    print(_upload_run(run_dir, run_url))
    return 0


def _tune(app: AppSpec, command: str, argv: list[str]) -> int:
    """The fit config parsed as `fit` parses it, plus --tune.*; with --tune.refit, `fit` of best.yaml."""
    _, namespace, cfg, values = parse_config(app, command, argv)
    if _remote_fit_paths(cfg, run_dir=False):
        raise ConfigError(f"--run_dir {cfg.run_dir}: tune writes its study to a local folder; give a local --run_dir")
    _writable_folder(Path(cfg.run_dir or "runs"), "--run_dir")
    from deepapps.core.config import from_dict
    from deepapps.core.tuning import TuneConfig, tune

    options = from_dict(TuneConfig, namespace.as_dict()["tune"])
    search = tune(app, cfg, values, options)
    print(search.tune_dir)
    if options.refit:
        if search.best_yaml is None:
            raise ConfigError(f"--tune.refit: no trial of the study has completed yet (see {search.tune_dir / 'trials.csv'})")
        sys.stdout.flush()
        _fit(app, "fit", ["--config", str(search.best_yaml), "--run_dir", str(search.refit_dir)], search=search.summary)
    return 0


def _stage(app: AppSpec, command: str, argv: list[str]) -> int:
    _, namespace, cfg, _ = parse_config(app, command, argv, with_ckpt=True)
    _remote_fit_paths(cfg, run_dir=False)
    from deepapps.core.training.fit import run_stage

    print(json.dumps(run_stage(app, Path(namespace.ckpt), cfg, command), indent=2))
    return 0


def _export(app: AppSpec, command: str, argv: list[str]) -> int:
    _, namespace, cfg, values = parse_config(app, command, argv, with_ckpt=True)
    from deepapps.core.training.fit import export_checkpoint

    from deepapps.core.runtime import remote

    url = str(namespace.out).rstrip("/") if namespace.out and remote.is_remote(namespace.out) else None
    if url:  # written in a local staging folder, then every file made there is uploaded beside `url`
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="deepapps-export-")) / url.rsplit("/", 1)[-1]
    else:
        out = Path(namespace.out) if namespace.out else Path(namespace.ckpt).with_suffix(".onnx")
    written = export_checkpoint(app, Path(namespace.ckpt), cfg, values, out, namespace.fp16, namespace.int8)
    if url:
        import shutil

        for file in sorted(p for p in out.parent.iterdir() if p.is_file()):
            remote.upload_file(file, f"{url.rsplit('/', 1)[0]}/{file.name}")
        shutil.rmtree(out.parent, ignore_errors=True)
        written = url
    print(written)
    return 0


# --- serving side (no torch) -----------------------------------------------------------


def _serving_parser(app: AppSpec, command: str) -> OneLineParser:
    parser = OneLineParser(prog=f"deepapps {app.name} {command}", description=COMMANDS[command], allow_abbrev=False)
    parser.add_argument("--model", required=True, help="deepapps .onnx file")
    parser.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto = CUDA when it initialises, else CPU")
    return parser


def _evaluate(app: AppSpec, command: str, argv: list[str]) -> int:
    from deepapps.core.runtime.io import same_file, write_json
    from deepapps.core.runtime.session import load_model, say_provider

    parser = _serving_parser(app, command)
    parser.add_argument("--data.path", "--data", dest="data_path", help="data to evaluate on (default: the training data)")
    parser.add_argument("--split", default="auto",
                        help="auto (default: test on the data the model was fit on, all on other data), "
                             "all (every item), or train, val or test as fit split the data")
    parser.add_argument("--out", help="also write the metrics to this JSON file")
    parser.add_argument("--group-columns", "--group_columns", dest="group_columns", default=None,
                        help="sensitive attributes of the data, e.g. sex,race: fairness by group (per group n, base "
                             "and selection rate, TPR, FPR, precision, AUROC; demographic-parity and equalized-odds "
                             "differences) in the metrics' `fairness` (binary models)")
    args = parser.parse_args(argv)
    if args.out and any(same_file(args.out, path) for path in (args.model, args.data_path) if path):
        raise ConfigError(f"--out {args.out}: is one of the inputs; it would be overwritten")
    from deepapps.core.runtime.evaluation import choose_split, with_choice

    model = load_model(args.model, args.provider, app=app.name)
    say_provider(model)
    data_path = args.data_path or model.contract.train.data_config.get("path")
    if not data_path:
        raise ConfigError("--data.path is required (the model does not name its training data)")
    data_path = _localize(data_path)  # a URL: fetched into the local cache (file or folder)
    split, chosen = choose_split(model, data_path, args.split)
    if chosen != "given":
        print(f"deepapps: auto: --split {split}: {chosen.removeprefix('auto: ')}", file=sys.stderr)
    serving = app.load_serving()
    group_columns = parse_columns(args.group_columns, "--group-columns") if args.group_columns else None
    groups = serving.group_values(model, data_path, split, group_columns) if group_columns else None
    evaluation = serving.evaluate(model, data_path, split)
    metrics = with_choice(evaluation.metrics, chosen)
    if groups is not None:
        from deepapps.core.fairness import evaluation_fairness

        metrics["fairness"] = evaluation_fairness(evaluation, model.contract.classification, groups)
    text = json.dumps(metrics, indent=2)
    if _display(text) != text:  # data fetched from a URL: named by the URL, not the cache path
        text = _display(text)
        metrics = json.loads(text)
    if args.out:
        write_json(args.out, metrics)
    print(text)
    return 0


def _predict(app: AppSpec, command: str, argv: list[str]) -> int:
    from deepapps.core.runtime.io import same_file, write_table
    from deepapps.core.runtime.session import load_model, say_provider

    serving = app.load_serving()
    parser = _serving_parser(app, command)
    parser.add_argument("--out", required=serving.writes_output,
                        help="output table (.csv, .parquet or .jsonl)" + ("" if serving.writes_output else
                                                                          "; default: CSV on stdout"))
    parser.add_argument("--engine", default="local", choices=["local", "spark"],
                        help="spark: score a Parquet dataset with a pandas UDF (pip install 'deepapps[spark]')")
    parser.add_argument("--spark-column", default=serving.spark_column,
                        help="with --engine spark: the input column (default: "
                             + (serving.spark_column or "each row as a record of its columns") + ")")
    parser.add_argument("--spark-master", default="local[*]", help="with --engine spark: the Spark master")
    serving.add_predict_arguments(parser)
    args = parser.parse_args(argv)
    if args.out and any(same_file(args.out, path) for path in [args.model, *args.inputs]):
        raise ConfigError(f"--out {args.out}: is one of the inputs; it would be overwritten")
    model = load_model(args.model, args.provider, app=app.name, session_config=serving.session_config)
    if args.engine == "spark":
        args.model = str(model.path)  # a remote model: its cached copy (Spark reads the data's URL itself)
        return _predict_spark(args)
    say_provider(model)
    args.inputs = [_localize(path) for path in args.inputs]  # URLs: fetched into the local cache
    result = serving.predict(model, args)  # a table, or None when the app wrote args.out itself
    if result.table is not None:
        from deepapps.core.runtime.remote import display_frame

        result.table = display_frame(result.table)  # cache paths in `source`/`path` named by their URLs
    if result.message:
        result.message = _display(result.message)
    if result.table is not None and args.out:
        write_table(args.out, result.table)
        print(f"wrote {result.rows} rows to {args.out}", file=sys.stderr)
    elif result.table is not None:
        sys.stdout.write(result.table.write_csv())
    if result.message:
        print(result.message, file=sys.stderr)
    if result.failures:
        print(f"{result.failures} of {result.rows} inputs failed; see the error column", file=sys.stderr)
    return 2 if result.failures and result.failures == result.rows else 0


def _predict_spark(args: argparse.Namespace) -> int:
    inputs = args.inputs
    if len(inputs) != 1 or not args.out:
        raise ConfigError("--engine spark takes one Parquet input (file, folder or URL) and --out")
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError("--engine spark needs pyspark: pip install 'deepapps[spark]'")
    from deepapps.core.spark import score_parquet

    rows = score_parquet(str(inputs[0]), args.out, args.model, args.spark_column, args.spark_master)
    print(f"wrote {rows} rows to {args.out}", file=sys.stderr)
    return 0


# --- helpers -----------------------------------------------------------------------------


def _localize(path: str) -> str:
    """A local path for a path or URL (s3://, gs://, az://, hdfs://, https://: fetched into the cache)."""
    from deepapps.core.runtime.remote import localize

    return localize(path)


def _display(text: str) -> str:
    """`text` with the cache paths of fetched URLs written back as the URLs."""
    from deepapps.core.runtime.remote import display

    return display(text)


def _remote_fit_paths(cfg, run_dir: bool = True) -> str | None:
    """Fit from and into URLs: a remote `--data.path` is fetched into the local cache (a file or a
    folder); with `run_dir`, a remote `--run_dir` is swapped for a local staging folder that
    `_upload_run` uploads when the fit ends. Returns the `--run_dir` URL, None when it is local."""
    from deepapps.core.runtime import remote

    data = getattr(cfg, "data", None)
    if data is not None and remote.is_remote(getattr(data, "path", None)):
        data.path = remote.localize(data.path)
    if not remote.is_remote(cfg.run_dir):
        return None
    url = str(cfg.run_dir).rstrip("/")
    if not run_dir:
        return url
    if cfg.resume:
        raise ConfigError(f"--run_dir {cfg.run_dir}: --resume needs the run in a local folder; download it first")
    import tempfile

    cfg.run_dir = str(Path(tempfile.mkdtemp(prefix="deepapps-run-")) / url.rsplit("/", 1)[-1])
    return url


def _upload_run(run_dir: Path, url: str | None) -> str:
    """The run folder to print: itself, or (remote --run_dir) the URL its files were uploaded to.
    The staging folder is removed once every file is uploaded (kept when an upload fails)."""
    if url is None:
        return str(run_dir)
    import shutil

    from deepapps.core.runtime.remote import upload_tree

    upload_tree(run_dir, url)
    shutil.rmtree(Path(run_dir).parent, ignore_errors=True)
    return url


def parse_columns(text: str, option: str) -> list[str]:
    """`a,b` or `[a, b]` -> ["a", "b"]; ConfigError when no name is left."""
    names = [name.strip().strip("'\"") for name in text.strip().strip("[]").split(",")]
    names = [name for name in names if name]
    if not names:
        raise ConfigError(f"{option} {text!r}: give column names, e.g. sex,race")
    return names


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    for noise in (".*(TensorBoard|tensorboardX).*", ".*LeafSpec.*", ".*smaller than the logging interval.*"):
        warnings.filterwarnings("ignore", message=noise)


def _option(argv: list[str], name: str) -> str | None:
    found = _options(argv, name)
    return found[0] if found else None


def _options(argv: list[str], name: str) -> list[str]:
    """Every value given to option `name` (`--name VALUE` or `--name=VALUE`)."""
    out = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith(name + "="):
            out.append(arg.split("=", 1)[1])
    return out


def _writable_folder(path: Path, option: str) -> None:
    """Refuse a folder that cannot be made or written (a file in the way, no permission), before
    any work: training first and failing at the end would lose it."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: no permission to write in {existing}")


def _check_yaml(path: str) -> None:
    """`--config FILE` must be a readable YAML mapping; else one line naming the file."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: not a readable YAML text file ({type(exc).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{line}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"--config {path}: not a YAML mapping of settings (found {type(data).__name__})")


def _bool_options(cls: type, prefix: str = "--") -> set[str]:
    """`--resume`, `--data.augment`, ...: every bool field of a config dataclass, as an option."""
    from dataclasses import fields, is_dataclass
    from typing import get_type_hints

    options = set()
    for name, kind in get_type_hints(cls).items():
        if is_dataclass(kind):
            options |= _bool_options(kind, f"{prefix}{name}.")
        elif kind is bool and name in {f.name for f in fields(cls)}:
            options.add(prefix + name)
    return options


def _bare_flags(argv: list[str], flags: set[str]) -> list[str]:
    """Let a bool option stand alone (`--resume` means `--resume true`)."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1] if i + 1 < len(argv) else "--"
        if arg in flags and following.startswith("--"):
            out.append("true")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _strip_config_keys(yaml: str) -> str:
    return "\n".join(line for line in yaml.splitlines() if not line.startswith("config:")) + "\n"


if __name__ == "__main__":
    sys.exit(main())
