"""The new head starts at the linear probe of the frozen features (model.head_init probe)."""

import pytest
import torch
import yaml

from deepapps.core.cli import main
from deepapps.core.config import ImageFitConfig
from deepapps.core.registry import get_app
from deepapps.core.training.probe_init import pooled_features, probe_head
from tests.helpers import COLOURS, TINY, make_image_folder


def tiny_config(path) -> ImageFitConfig:
    cfg = ImageFitConfig()
    for section, values in yaml.safe_load(TINY.read_text()).items():
        for name, value in values.items():
            setattr(getattr(cfg, section), name, value)
    cfg.data.path, cfg.data.batch_size = str(path), 8
    return cfg


@pytest.mark.parametrize("classes", [2, 3])
def test_head_predicts_what_the_probe_predicts(tmp_path, classes):
    folder = make_image_folder(tmp_path / "images", dict(list(COLOURS.items())[:classes]), per_class=20)
    cfg = tiny_config(folder)
    torch.manual_seed(0)
    training = get_app("vision").load_training()
    built = training.build(cfg)
    info = probe_head(built.net, built.datamodule)
    assert info["train_images"] + info["val_images"] < 20 * classes and info["C"] > 0
    from torch.utils.data import DataLoader

    val = DataLoader(built.datamodule.dataset("val"), batch_size=16)
    features, targets = pooled_features(built.net, val)
    with torch.no_grad():
        logits = built.net.eval().head(torch.from_numpy(features))
    accuracy = float((logits.argmax(1).numpy() == targets).mean())
    assert accuracy == pytest.approx(info["val_accuracy"])  # the head is the probe, standardisation folded in
    assert accuracy == 1.0  # colour classes are linearly separable even in a random network's features


def test_fit_with_probe_head_and_bad_value(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    args = ["vision", "fit", "--config", str(TINY), "--data.path", str(image_folder), "--data.batch_size", "8",
            "--trainer.max_epochs", "1", "--run_dir", str(run)]
    assert main([*args, "--model.head_init", "probe"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["head_init"] == "probe"
    capsys.readouterr()
    assert main([*args[:-1], str(tmp_path / "bad"), "--model.head_init", "linear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--model.head_init linear: choose random or probe" in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "bad").exists()
