import pytest
import torch

from deepapps.core.config import OptimConfig
from deepapps.core.training.backbones import create_timm_model
from deepapps.core.training.image_model import ImageClassifier
from deepapps.core.contract import problem_type
from deepapps.core.training.classifier import ClassificationModule as ClassificationTask
from deepapps.core.training.classifier import make_metrics
from deepapps.core.training.optim import LrSchedule as _Schedule


def test_schedule_shapes():
    cosine = _Schedule("cosine", warmup=10, total=100)
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(55) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    frozen = _Schedule("constant", 0, 100, frozen=20, scale=0.1)
    assert frozen(19) == 0.0 and frozen(20) == pytest.approx(0.1)
    onecycle = _Schedule("onecycle", 0, 100)
    assert onecycle(29) == pytest.approx(1.0) and onecycle(99) < 0.01
    with pytest.raises(ValueError, match="schedule"):
        _Schedule("linear", 0, 10)


@pytest.mark.parametrize("n, multilabel, expected", [(2, False, "binary"), (5, False, "multiclass"), (3, True, "multilabel")])
def test_problem_type_and_metric_keys(n, multilabel, expected):
    assert problem_type(n, multilabel) == expected
    keys = set(make_metrics(expected, n).keys())
    assert {"accuracy", "macro_f1", "auroc"} <= keys
    assert ("auprc" in keys) == (expected != "multiclass")


def test_binary_auprc_uses_the_positive_class():
    metrics = make_metrics("binary", 2)
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    target = torch.tensor([0, 0, 1, 1])
    metrics.update(probs, target)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["accuracy"] == pytest.approx(0.75)
    assert values["auprc"] == pytest.approx(1.0)  # positives ranked 1st and 2nd by p(class 1)
    assert values["auroc"] == pytest.approx(1.0)


def test_multilabel_loss_and_probabilities():
    backbone, _ = create_timm_model("test_resnet", 0, None)
    net = ImageClassifier(backbone, 3, (0.5,) * 3, (0.5,) * 3)
    task = ClassificationTask(net, ["a", "b", "c"], multilabel=True, optim=OptimConfig())
    logits = torch.zeros(2, 3)
    assert torch.allclose(task.probabilities(logits), torch.full((2, 3), 0.5))
    assert float(task.loss(logits, torch.tensor([[1, 0, 1], [0, 1, 0]]))) == pytest.approx(0.6931, abs=1e-4)


def test_grey_input_is_repeated_to_three_channels():
    backbone, _ = create_timm_model("test_resnet", 0, None)
    net = ImageClassifier(backbone, 2, (0.5,) * 3, (0.5,) * 3, in_channels=1).eval()
    grey = torch.randint(0, 256, (2, 32, 32, 1), dtype=torch.uint8)
    rgb = grey.expand(-1, -1, -1, 3).contiguous()
    net3 = ImageClassifier(backbone, 2, (0.5,) * 3, (0.5,) * 3).eval()
    net3.head = net.head
    with torch.no_grad():
        assert torch.allclose(net(grey), net3(rgb))
