"""core.contract: the typed metadata of every model file, its validation and schema versions."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from deepapps.core.contract import (
    SCHEMA_VERSION, Classification, ContractError, Forecast, ModelContract, Provenance, TensorSpec, read_contract,
    read_metadata, write_model,
)
from deepapps.core.runtime.session import load_model

V1 = Path(__file__).resolve().parents[1] / "data" / "v1"


def identity_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["probabilities"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def classifier() -> ModelContract:
    return ModelContract(
        app="vision", family="image_classification",
        kind=Classification(["cat", "dog"], "binary", threshold=0.3, temperature=1.7, positive_index=0),
        inputs=[TensorSpec("x", "float32", ["batch", 2], details={"note": "raw"})],
        outputs=[TensorSpec("probabilities", "float32")], preprocess={"size": 2},
        train=Provenance(data_config={"path": "data/"}), details={"clinical": {"rule": "youden"}},
    )


def write_raw(path: Path, metadata: object) -> Path:
    proto = identity_model()
    entry = proto.metadata_props.add()
    entry.key, entry.value = "deepapps", metadata if isinstance(metadata, str) else json.dumps(metadata)
    onnx.save(proto, str(path))
    return path


def test_a_contract_survives_the_file_round_trip(tmp_path):
    write_model(tmp_path / "m.onnx", identity_model(), classifier())
    back = read_contract(tmp_path / "m.onnx")
    assert back == classifier()
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["schema_version"] == SCHEMA_VERSION and meta["task"] == "binary" and meta["threshold"] == 0.3
    assert meta["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 2], "note": "raw"}]
    assert meta["clinical"] == {"rule": "youden"}  # the app's section stays at the top level
    model = load_model(tmp_path / "m.onnx", "cpu", app="vision")
    assert model.contract.classification.positive_index == 0 and model.labels == ["cat", "dog"]


def test_a_forecast_keeps_its_geometry_in_preprocess_and_its_state_on_top(tmp_path):
    kind = Forecast(["load"], 24, 6, [0.1, 0.5, 0.9], "1h", 24, {"scale": [[1.0, 1.0, 1.0]] * 6}, None)
    contract = ModelContract("forecast", "forecasting", kind, [TensorSpec("history", "float32")],
                             [TensorSpec("quantiles", "float32")], {"timestamp": "date"})
    meta = contract.to_json()
    assert meta["task"] == "forecasting" and "labels" not in meta and "threshold" not in meta
    assert meta["preprocess"] == {"timestamp": "date", "targets": ["load"], "freq": "1h", "look_back": 24,
                                  "horizon": 6, "quantiles": [0.1, 0.5, 0.9], "season_length": 24}
    back = ModelContract.from_json(meta, "m.onnx")
    assert back.forecast == kind and back.preprocess == {"timestamp": "date"} and back.forecast.median_index == 1
    with pytest.raises(ContractError, match="forecasting model, not a classifier"):
        back.classification


@pytest.mark.parametrize("app", ["vision", "healthcare", "forecast", "fraud"])
def test_files_of_deepapps_0_1_read_as_schema_1(app):
    meta = json.loads((V1 / f"{app}_metadata.json").read_text())
    contract = ModelContract.from_json(meta, f"{app}.onnx")
    assert contract.schema_version == 1 and contract.app == app
    if app == "healthcare":
        assert contract.kind.temperature == meta["temperature"] and contract.kind.threshold == meta["threshold"]
        assert contract.kind.positive_index == meta["clinical"]["threshold"]["positive_index"]
        assert contract.details["clinical"] == meta["clinical"]
    if app == "forecast":  # its fake labels and threshold are gone, its calibration kept
        assert contract.forecast.interval_calibration == meta["interval_calibration"] and contract.forecast.ets is None
        assert "labels" not in contract.details and "threshold" not in contract.details
    if app == "fraud":
        assert contract.details["decision"] == meta["decision"] and contract.kind.threshold == meta["threshold"]


@pytest.mark.parametrize("change, field", [
    (lambda m: m.pop("app"), "'app' is missing"),
    (lambda m: m.update(labels="cat"), "'labels' must be a non-empty list of strings"),
    (lambda m: m.update(task="regression"), "'task' must be one of"),
    (lambda m: m.update(threshold="high"), "'threshold' must be"),
    (lambda m: m.update(inputs=[{"name": "x"}]), "'inputs[0].dtype' is missing"),
    (lambda m: m.update(temperature=-1), "'temperature' must be a positive number"),
    (lambda m: m["preprocess"].clear() or m.update(task="forecasting"), "'preprocess.targets' is missing"),
    (lambda m: m.update(train=[1]), "'train' must be an object"),
])
def test_a_malformed_field_is_one_line_naming_the_file_and_the_field(tmp_path, change, field):
    meta = classifier().to_json()
    change(meta)
    path = write_raw(tmp_path / "bad.onnx", meta)
    with pytest.raises(ContractError) as info:
        read_contract(path)
    assert str(info.value).startswith(f"{path}: ") and field in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ContractError, match=field.split("'")[1].replace("[", r"\[").replace("]", r"\]")):
        load_model(path, "cpu")


def test_metadata_that_is_not_json_or_from_a_newer_release_is_refused(tmp_path):
    with pytest.raises(ContractError, match="not valid JSON"):
        read_contract(write_raw(tmp_path / "a.onnx", "{not json"))
    newer = classifier().to_json() | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(ContractError, match="newer deepapps"):
        read_contract(write_raw(tmp_path / "b.onnx", newer))
    with pytest.raises(ContractError, match="not a deepapps model"):
        onnx.save(identity_model(), str(tmp_path / "c.onnx"))
        read_contract(tmp_path / "c.onnx")


def test_details_may_not_shadow_the_contract(tmp_path):
    with pytest.raises(ValueError, match="threshold"):
        classifier().with_(details={"threshold": 1}).to_json()
