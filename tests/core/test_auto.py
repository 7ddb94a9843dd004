"""`auto` fit settings of the image family: the rules on synthetic data summaries (numbers
asserted), the data summary, and one tiny fit whose config.yaml and model card hold the choices."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from deepapps.core.config import ImageFitConfig
from deepapps.core.errors import ConfigError
from deepapps.core.training.auto import (
    ImageDataSummary, apply_to_yaml, check_resolved, choose_batch_size, choose_image_size, choose_lr,
    resolve_image_auto, summarize_images,
)
from tests.helpers import COLOURS, TINY, make_image_folder

AUTO_FIELDS = [("data", "image_size"), ("data", "hflip"), ("data", "batch_size"), ("trainer", "max_epochs"),
               ("model", "freeze_epochs"), ("optim", "lr")]
GIB = 2**30


def all_auto(cfg=None):
    cfg = cfg or ImageFitConfig()
    for section, name in AUTO_FIELDS:
        setattr(getattr(cfg, section), name, "auto")
    return cfg


def resolved(summary: ImageDataSummary, pretrained_size: int = 224, pretrained: bool = True,
             memory: int = 64 * GIB, cfg=None) -> dict:
    cfg = all_auto(cfg)
    choices = resolve_image_auto(cfg, summary, pretrained_size, pretrained, memory=memory)
    assert all(c.reason for c in choices)
    return {c.field: c.value for c in choices}


def test_photos_small_set_pretrained_size_flips_frozen_head():
    # hymenoptera: 208 training photos of ~333 px, colour
    got = resolved(ImageDataSummary(208, 2, "binary", 333, grey=False))
    assert got == {"data.image_size": 224, "data.hflip": 0.5, "trainer.max_epochs": 12, "model.freeze_epochs": 2,
                   "data.batch_size": 16, "optim.lr": 0.00141}


def test_embedded_digits_keep_the_fast_demo_recipe():
    # 8x8 grey digits: 64 px, no flips, 5 epochs, never frozen (0.814 frozen-first vs 0.989), batch 32, 2e-3
    got = resolved(ImageDataSummary(1257, 10, "multiclass", 8, grey=True))
    assert got == {"data.image_size": 64, "data.hflip": 0.0, "trainer.max_epochs": 5, "model.freeze_epochs": 0,
                   "data.batch_size": 32, "optim.lr": 0.002}


def test_medical_grey_28px():
    breast = resolved(ImageDataSummary(546, 2, "binary", 28, grey=True, medical=True))
    assert breast["data.image_size"] == 64 and breast["data.hflip"] == 0.0
    assert (breast["trainer.max_epochs"], breast["model.freeze_epochs"], breast["data.batch_size"]) == (12, 0, 16)
    pneumonia = resolved(ImageDataSummary(4708, 2, "binary", 28, grey=True, medical=True))
    assert (pneumonia["trainer.max_epochs"], pneumonia["model.freeze_epochs"], pneumonia["data.batch_size"]) == (5, 0, 64)
    assert pneumonia["optim.lr"] == 0.00283


def test_colour_medical_images_are_not_flipped():
    assert resolved(ImageDataSummary(5000, 7, "multiclass", 300, grey=False, medical=True))["data.hflip"] == 0.0


@pytest.mark.parametrize("side, pretrained, size", [
    (8, 224, 64), (28, 224, 64), (33, 224, 96), (64, 224, 128), (100, 224, 224), (500, 224, 224),
    (28, 160, 64), (128, 160, 160), (500, 384, 384),
])
def test_image_size_rule(side, pretrained, size):
    summary = ImageDataSummary(1000, 3, "multiclass", side, grey=False)
    assert choose_image_size(summary, pretrained).value == size


@pytest.mark.parametrize("n, epochs, freeze", [(100, 12, 2), (999, 12, 2), (1000, 5, 1), (9999, 5, 1),
                                               (10_000, 4, 0), (49_999, 4, 0), (50_000, 3, 0), (10**6, 3, 0)])
def test_epochs_and_freeze_from_the_data_size(n, epochs, freeze):
    got = resolved(ImageDataSummary(n, 3, "multiclass", 300, grey=False))
    assert (got["trainer.max_epochs"], got["model.freeze_epochs"]) == (epochs, freeze)


def test_no_freezing_without_pretrained_weights_and_below_max_epochs():
    assert resolved(ImageDataSummary(200, 2, "binary", 300, False), pretrained=False)["model.freeze_epochs"] == 0
    cfg = all_auto()
    cfg.trainer.max_epochs = 2
    resolve_image_auto(cfg, ImageDataSummary(200, 2, "binary", 300, False), 224, True, memory=64 * GIB)
    assert cfg.model.freeze_epochs == 1


@pytest.mark.parametrize("n, batch", [(100, 16), (799, 16), (800, 32), (1599, 32), (1600, 64), (10**6, 64)])
def test_batch_size_from_the_data_size(n, batch):
    assert choose_batch_size(ImageDataSummary(n, 2, "binary", 300, False), 224, 64 * GIB).value == batch


def test_batch_size_halves_to_fit_the_memory():
    summary = ImageDataSummary(10**5, 2, "binary", 300, False)
    # a quarter of 1 GiB over 224 x 224 x 2 KiB per image: 2.6 images -> 2
    choice = choose_batch_size(summary, 224, 1 * GIB)
    assert choice.value == 2 and "halved" in choice.reason
    assert choose_batch_size(summary, 224, 8 * GIB).value == 16
    assert choose_batch_size(summary, 64, 8 * GIB).value == 64


@pytest.mark.parametrize("backbone, batch, lr", [
    ("tf_efficientnet_lite0", 32, 0.002), ("mobilenetv3_large_100", 64, 0.00283), ("resnet50", 32, 0.001),
    ("resnet18", 16, 0.000707), ("vit_small_patch16_224", 32, 0.0002), ("convnext_tiny", 64, 0.000283),
    ("some_new_net", 32, 0.001),
])
def test_lr_from_the_backbone_family(backbone, batch, lr):
    assert choose_lr(backbone, batch).value == pytest.approx(lr)


def test_explicit_values_are_kept_and_auto_fields_only_are_chosen():
    cfg = ImageFitConfig()
    cfg.data.image_size, cfg.data.batch_size = "auto", 8
    choices = resolve_image_auto(cfg, ImageDataSummary(208, 2, "binary", 333, False), 224, True, memory=64 * GIB)
    assert [c.field for c in choices] == ["data.image_size"]
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.optim.lr, cfg.trainer.max_epochs) == (224, 8, 1e-3, 10)


def test_healthcare_multiclass_monitors_accuracy_without_class_weights():
    from deepapps.apps.healthcare.config import HealthcareFitConfig

    cfg = HealthcareFitConfig()
    cfg.trainer.monitor, cfg.clinical.imbalance = "auto", "auto"
    grading = ImageDataSummary(1080, 5, "multiclass", 28, grey=False, medical=True)
    got = resolved(grading, cfg=cfg)
    assert (got["trainer.monitor"], got["clinical.imbalance"]) == ("val/accuracy", "none")
    cfg = HealthcareFitConfig()
    cfg.trainer.monitor, cfg.clinical.imbalance = "auto", "auto"
    got = resolved(ImageDataSummary(546, 2, "binary", 28, grey=True, medical=True), cfg=cfg)
    assert (got["trainer.monitor"], got["clinical.imbalance"]) == ("val/auroc", "loss")


def test_a_string_left_in_a_numeric_field_is_one_error():
    cfg = ImageFitConfig()
    cfg.data.batch_size = "big"
    with pytest.raises(ConfigError, match="--data.batch_size big: expected a number or `auto`"):
        check_resolved(cfg)
    cfg.data.batch_size = "auto"
    with pytest.raises(ConfigError, match="needs the data"):
        check_resolved(cfg)


def test_summary_of_photos_and_of_grey_arrays(tmp_path):
    from deepapps.core.data.image_sources import open_image_source

    for name in COLOURS:
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(6):
            noise = np.random.default_rng(i).integers(0, 255, (140, 150 + 20 * i, 3), dtype=np.uint8)
            Image.fromarray(noise).save(tmp_path / "photos" / name / f"{i}.jpg")
    photos = summarize_images(open_image_source(str(tmp_path / "photos")), "multiclass")
    assert photos.photos and not photos.grey and photos.median_side == 140 and photos.n_classes == 3
    digits = summarize_images(open_image_source("builtin:digits"), "multiclass")
    assert digits.grey and digits.median_side == 8 and not digits.photos and digits.n_train == 1259


def test_yaml_gets_the_resolved_values():
    text = "data:\n  image_size: auto\n  hflip: auto\ntrainer:\n  max_epochs: auto\n"
    out = yaml.safe_load(apply_to_yaml(text, [{"field": "data.image_size", "value": 224},
                                              {"field": "trainer.max_epochs", "value": 12}]))
    assert out == {"data": {"image_size": 224, "hflip": "auto"}, "trainer": {"max_epochs": 12}}


def test_fit_writes_resolved_values_to_config_yaml_and_the_card(tmp_path, capsys):
    from deepapps.core.cli import main

    folder = make_image_folder(tmp_path / "images", COLOURS, per_class=10)
    run = tmp_path / "run"
    code = main(["vision", "fit", "--config", str(TINY), "--data.path", str(folder), "--run_dir", str(run),
                 "--data.image_size", "auto", "--data.hflip", "auto", "--data.batch_size", "auto",
                 "--optim.lr", "auto", "--model.freeze_epochs", "auto", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"])
    assert code == 0
    err = capsys.readouterr().err
    assert "deepapps: auto: --data.image_size 64 (" in err and "deepapps: auto: --data.hflip 0.0 (" in err
    config = yaml.safe_load((run / "config.yaml").read_text())
    # 24 px colour squares: 2x -> 64 px, no flips (small images); 21 training images -> batch 16;
    # test_resnet (ResNet family) 1e-3 x sqrt(16/32); random init -> nothing frozen
    assert config["data"]["image_size"] == 64 and config["data"]["hflip"] == 0.0
    assert config["data"]["batch_size"] == 16 and config["optim"]["lr"] == 0.000707
    assert config["model"]["freeze_epochs"] == 0 and config["trainer"]["max_epochs"] == 1
    card = (run / "model_card.md").read_text()
    assert "## Auto choices" in card
    assert "| `data.image_size` | `64` |" in card and "| `optim.lr` | `0.000707` |" in card
    # the run's config.yaml reproduces it: nothing is left to choose
    from deepapps.core.training.checkpoints import read_checkpoint

    saved = read_checkpoint(run / "checkpoints" / "best.ckpt").saved.config
    assert saved["data"]["image_size"] == 64 and saved["optim"]["lr"] == 0.000707
