import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deepapps.core.errors import ExportParityError
from deepapps.core.contract import read_metadata
from deepapps.core.training.export import convert_fp16, export_onnx
from deepapps.core.training.backbones import create_timm_model
from deepapps.core.training.heads import WithProbabilities
from deepapps.core.training.image_model import ImageClassifier


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    backbone, _ = create_timm_model("test_resnet", 0, None)
    return ImageClassifier(backbone, 3, (0.5,) * 3, (0.25,) * 3).eval()


def pixels(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))


def run(path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": x})[0]


def test_export_checks_writes_metadata_and_takes_any_batch(net, tmp_path):
    meta = export_onnx(WithProbabilities(net, False), (pixels(4),), tmp_path / "m.onnx", ["pixels"], {"app": "vision", "labels": ["a", "b", "c"]})
    assert read_metadata(tmp_path / "m.onnx") == meta
    assert meta["export"]["parity_max_abs_diff"] <= 1e-4 and meta["export"]["opset"] >= 17
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    for n in (1, 7):  # dynamic batch axis
        with torch.no_grad():
            expected = torch.softmax(net(pixels(n)), -1).numpy()
        assert np.abs(run(tmp_path / "m.onnx", pixels(n).numpy()) - expected).max() < 1e-4


def test_temperature_is_inside_the_graph(net, tmp_path):
    export_onnx(WithProbabilities(net, False, temperature=2.0), (pixels(2),), tmp_path / "t.onnx", ["pixels"],
                {"app": "vision"})
    with torch.no_grad():
        expected = torch.softmax(net(pixels(2)) / 2.0, -1).numpy()
    assert np.abs(run(tmp_path / "t.onnx", pixels(2).numpy()) - expected).max() < 1e-5


def test_parity_failure_is_loud_and_writes_nothing(net, tmp_path):
    with pytest.raises(ExportParityError, match="differs from torch"):
        export_onnx(WithProbabilities(net, False), (pixels(2),), tmp_path / "bad.onnx", ["pixels"], {"app": "vision"},
                    tolerance=-1.0)
    assert not (tmp_path / "bad.onnx").exists()


def test_fp16_copy_keeps_io_and_metadata(net, tmp_path):
    export_onnx(WithProbabilities(net, False), (pixels(2),), tmp_path / "m.onnx", ["pixels"], {"app": "vision"})
    convert_fp16(tmp_path / "m.onnx", tmp_path / "m16.onnx")
    half = onnx.load(str(tmp_path / "m16.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert read_metadata(tmp_path / "m16.onnx")["export"]["precision"] == "fp16"
    x = pixels(3).numpy()
    assert np.abs(run(tmp_path / "m16.onnx", x) - run(tmp_path / "m.onnx", x)).max() < 2e-2
