"""Bring your own ONNX: a foreign-style classifier built with onnx.helper, imported and used."""

from __future__ import annotations

import json

import numpy as np
import onnx
import polars as pl
import pytest
from onnx import TensorProto, helper

from deepapps.core.cli import main
from deepapps.core.contract import read_metadata

LABELS = ["blue", "green", "red"]  # the test image folder's classes


def colour_classifier(layout: str, opset: int = 13) -> onnx.ModelProto:
    """A Keras/tf2onnx-like model: float pixels in [0, 1] -> mean colour -> logits per class."""
    nhwc = layout == "NHWC"
    x = helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["N", 16, 16, 3] if nhwc else ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["N", 3])
    weights = np.array([[0, 0, 10], [0, 10, 0], [10, 0, 0]], np.float32)  # rows r,g,b -> cols blue,green,red
    nodes = [helper.make_node("ReduceMean", ["input_1"], ["mean"], axes=[1, 2] if nhwc else [2, 3], keepdims=0),
             helper.make_node("MatMul", ["mean", "W"], ["dense"])]
    graph = helper.make_graph(nodes, "foreign", [x], [y],
                              initializer=[helper.make_tensor("W", TensorProto.FLOAT, [3, 3], weights.ravel())])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_imported_model_predicts_and_evaluates(layout, tmp_path, image_folder, capsys):
    foreign = tmp_path / "foreign.onnx"
    onnx.save(colour_classifier(layout), str(foreign))
    out = tmp_path / "model.onnx"
    assert main(["import", "--app", "vision", "--onnx", str(foreign), "--labels", ",".join(LABELS),
                 "--size", "16", "--mean", "0,0,0", "--std", "1,1,1", "--layout", layout, "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["app"] == "vision" and meta["labels"] == LABELS and meta["inputs"][0]["dtype"] == "uint8"
    assert main(["vision", "predict", "--model", str(out), "--out", str(tmp_path / "p.csv"), str(image_folder)]) == 0
    table = pl.read_csv(tmp_path / "p.csv")
    truth = table["path"].str.split("/").list.get(-2)
    assert (table["label"] == truth).all()
    capsys.readouterr()
    assert main(["vision", "evaluate", "--model", str(out), "--data.path", str(image_folder)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


def test_wrong_label_count_and_bad_file_are_one_line_errors(tmp_path, capsys):
    foreign = tmp_path / "foreign.onnx"
    onnx.save(colour_classifier("NCHW"), str(foreign))
    assert main(["import", "--onnx", str(foreign), "--labels", "a,b", "--size", "16"]) == 2
    assert "3 scores per image, but 2 labels" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert main(["import", "--onnx", str(tmp_path / "junk.onnx"), "--labels", "a,b"]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
