from pathlib import Path

from deepapps.core.cli import _bare_flags, _bool_options, main, run_app
from deepapps.core.config import ImageFitConfig
from deepapps.core.registry import AppCommand, AppSpec, discover_apps


def hello(app, argv):
    print(f"hello from {app.name} {' '.join(argv)}")
    return 0


def test_apps_are_discovered_through_entry_points():
    assert "vision" in discover_apps()


def test_help_lists_apps_and_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "vision" in out and "predict" in out and "evaluate" in out


def test_an_app_can_add_a_command(capsys):
    spec = AppSpec(
        name="demo", help="demo app", family="image_classification", config_class="deepapps.core.config:ImageFitConfig",
        configs_dir=Path("."), training="x", serving="y",
        commands=(AppCommand("hello", "say hello", "tests.core.test_cli:hello"),),
    )
    assert run_app(spec, ["--help"]) == 0
    assert "hello      say hello" in capsys.readouterr().out
    assert run_app(spec, ["hello", "world"]) == 0
    assert capsys.readouterr().out == "hello from demo world\n"


def test_bool_options_may_stand_alone():
    flags = _bool_options(ImageFitConfig)
    assert {"--resume", "--export_fp16", "--data.augment"} <= flags
    assert _bare_flags(["--resume", "--data.augment", "false", "--seed", "1"], flags) == [
        "--resume", "true", "--data.augment", "false", "--seed", "1"]
    assert _bare_flags(["--export_fp16"], flags) == ["--export_fp16", "true"]
