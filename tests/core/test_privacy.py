"""DP-SGD (core/training/privacy.py, Opacus): a private fraud fit and a private image fit export
ONNX with the budget spent in metrics, contract and card; bad settings are one line, exit 2."""

from __future__ import annotations

import json
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from torch import nn

from deepapps.core.cli import main
from deepapps.core.config import PrivacyConfig
from deepapps.core.contract import read_metadata
from deepapps.core.errors import ConfigError
from deepapps.core.training import privacy

FRAUD_TINY = "apps/finance/fraud/configs/tiny.yaml"
FRAUD_FAST = ["--data.synth_rows", "6000", "--data.synth_fraud_rate", "0.04", "--trainer.max_epochs", "2",
              "--baselines", "false"]
VISION_TINY = "apps/vision/configs/tiny.yaml"
TOLERANCE = 0.05  # the noise calibration's (0.01) and the PRV accountant's epsilon error (0.01), with room


@pytest.fixture(scope="module")
def fraud_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("private") / "fraud"
    assert main(["fraud", "fit", "--config", FRAUD_TINY, *FRAUD_FAST, "--privacy.epsilon", "3",
                 "--privacy.delta", "1e-5", "--run_dir", str(run_dir)]) == 0
    return run_dir


def test_private_fraud_fit_spends_at_most_its_budget(fraud_run):
    m = json.loads((fraud_run / "metrics.json").read_text())
    spent = m["post_fit"]["privacy"]
    assert 0 < spent["epsilon_spent"] <= 3 + TOLERANCE
    assert spent["epsilon_spent"] > 3 - 0.5  # the noise is calibrated to spend the budget over the planned steps
    assert spent["delta"] == 1e-5 and spent["max_grad_norm"] == 1.0 and spent["noise_multiplier"] > 0.3
    assert spent["steps"] == spent["steps_planned"] > 0 and spent["fine_tune"] == "all"
    assert spent["replaced"] == ["body.1: BatchNorm1d -> GroupNorm"]  # the tiny MLP's one batch norm
    epochs = [e["epsilon"] for e in spent["per_epoch"]]
    assert len(epochs) == 2 and 0 < epochs[0] < epochs[1] == pytest.approx(spent["epsilon_spent"])
    logged = pl.read_csv(fraud_run / "csv" / "metrics.csv")["privacy/epsilon"].drop_nulls().to_list()
    assert logged == pytest.approx(epochs)
    # the exported graph is the trained network (no Opacus wrapper): ONNX and torch rank the test rows alike
    assert m["test"]["auprc"] == pytest.approx(m["test_torch"]["auprc"], abs=1e-4)
    assert m["test"]["auprc"] > m["test"]["frauds"] / m["test"]["n"]  # better than a random ranking
    meta = read_metadata(fraud_run / "model.onnx")
    assert meta["privacy"]["epsilon_spent"] == spent["epsilon_spent"] and meta["privacy"]["delta"] == 1e-5
    card = (fraud_run / "model_card.md").read_text()
    assert "## Differential privacy" in card and f"| epsilon spent | {spent['epsilon_spent']:.4g}" in card
    assert "BatchNorm1d -> GroupNorm" in card


def test_private_checkpoint_exports_the_same_model(fraud_run, tmp_path):
    """export --ckpt rebuilds the replaced layers from the checkpoint's config."""
    out = tmp_path / "again.onnx"
    assert main(["fraud", "export", "--ckpt", str(fraud_run / "checkpoints" / "best.ckpt"), "--out", str(out)]) == 0
    assert read_metadata(out)["privacy"] == read_metadata(fraud_run / "model.onnx")["privacy"]


def test_private_image_fit(tmp_path):
    run_dir = tmp_path / "vision"
    assert main(["vision", "fit", "--config", VISION_TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches",
                 "4", "--trainer.limit_val_batches", "2", "--privacy.epsilon", "8", "--run_dir", str(run_dir)]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    spent = m["post_fit"]["privacy"]
    assert 0 < spent["epsilon_spent"] <= 8 + TOLERANCE and spent["steps"] == spent["steps_planned"] == 4
    assert spent["fine_tune"] == "all"  # random init: every layer trains
    assert spent["replaced"] and all("BatchNorm2d -> GroupNorm" in r for r in spent["replaced"])
    assert m["export"]["parity_max_abs_diff"] < 1e-4
    assert read_metadata(run_dir / "model.onnx")["privacy"]["noise_multiplier"] == spent["noise_multiplier"]
    assert "## Differential privacy" in (run_dir / "model_card.md").read_text()


def test_pretrained_backbone_trains_its_head_only():
    """A pretrained backbone is frozen (its batch norms kept, in eval mode): only the head is private."""
    from deepapps.core.training.backbones import create_timm_model
    from deepapps.core.training.image_model import ImageClassifier

    backbone, _ = create_timm_model("test_resnet", 0, None)
    net = ImageClassifier(backbone, 3, (0.5,) * 3, (0.5,) * 3)
    cfg = SimpleNamespace(privacy=PrivacyConfig(epsilon=3.0), model=SimpleNamespace(pretrained="auto"))
    built = SimpleNamespace(net=net)
    plan = privacy.prepare(built, cfg, check=False)
    assert plan.fine_tune == "head" and plan.frozen == ["backbone"] and plan.replaced == []
    trainable = {name for name, p in built.net.named_parameters() if p.requires_grad}
    assert trainable == {"head.1.weight", "head.1.bias"}
    assert any(isinstance(m, nn.BatchNorm2d) for m in built.net.backbone.modules())


def test_timm_batchnorm_act_is_replaced_with_its_activation():
    """Opacus' validator matches exact types; timm's BatchNormAct2d (a BatchNorm2d) is replaced too."""
    from timm.layers import BatchNormAct2d

    net = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct2d(8), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 6, 6))
    fixed, replaced = privacy.private_layers(net)
    assert replaced == ["1: BatchNormAct2d -> GroupNorm+ReLU"]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fixed.modules())


class DataDependent(nn.Module):
    """Python control flow on a tensor value: functorch cannot take per-sample gradients of it."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale if float((x * self.scale).sum()) > 0 else -x * self.scale


def test_network_opacus_cannot_train_is_one_config_error():
    with pytest.raises(ConfigError, match="Opacus cannot compute per-sample gradients") as info:
        privacy._check_per_sample_gradients(DataDependent(), (torch.randn(2, 4),))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("option, value, needle", [
    ("--privacy.epsilon", "0", "--privacy.epsilon 0.0: must be positive"),
    ("--privacy.epsilon", "-1", "--privacy.epsilon -1.0: must be positive"),
    ("--privacy.delta", "0.01", "--privacy.delta 0.01: must be in (0, 1/n)"),
    ("--privacy.max_grad_norm", "0", "--privacy.max_grad_norm 0.0: must be positive"),
])
def test_bad_privacy_settings_are_one_line(tmp_path, capsys, option, value, needle):
    extra = [] if option == "--privacy.epsilon" else ["--privacy.epsilon", "3"]
    run_dir = tmp_path / "r"
    assert main(["fraud", "fit", "--config", FRAUD_TINY, *FRAUD_FAST, *extra, option, value,
                 "--run_dir", str(run_dir)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deepapps: error:")]
    assert len(errors) == 1 and needle in errors[0], errors
    assert not run_dir.exists()  # refused before the run folder is made
