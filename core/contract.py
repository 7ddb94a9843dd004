"""The model contract: the typed, versioned metadata every deepapps ONNX file carries.

One JSON document in `metadata_props["deepapps"]`, read and written here with onnx and ONNX
Runtime only (no torch). Predict, evaluate, serve, import, quantize and the reports all read
a model through `ModelContract`; a missing or malformed field is a one-line error naming the
file and the field, never a KeyError later.

Layout (schema 2; files without `schema_version` are schema 1 and read the same way):

    schema_version, app, family, task, inputs, outputs, preprocess, metrics, train, version,
    created, export                     the common part
    labels, threshold, temperature,     the classification kind (task binary, multiclass,
    positive_index                      multilabel)
    preprocess.{targets, look_back,     the forecast kind (task forecasting): its window geometry
    horizon, quantiles, freq,           lives in `preprocess` (predict cuts the windows by it),
    season_length}, interval_calibration, its post-fit state at the top level
    ets
    any other top-level key             the app's own section (`details`: e.g. healthcare's
                                        `clinical`, fraud's `decision`); the core never reads it

`task` names what the model predicts (binary, multiclass, multilabel or forecasting); `family`
names the kind of network an app built (image_classification, text_classification, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from deepapps.core.errors import ModelFileError

METADATA_KEY = "deepapps"
SCHEMA_VERSION = 2
PROBLEMS = ("binary", "multiclass", "multilabel")
FORECASTING = "forecasting"


class ContractError(ModelFileError):
    """Metadata that is missing, malformed or from a newer deepapps."""


def problem_type(num_labels: int, multilabel: bool) -> str:
    """`binary`, `multiclass` or `multilabel`: the `task` of a classifier with these labels."""
    if multilabel:
        return "multilabel"
    return "binary" if num_labels == 2 else "multiclass"


# --- the parts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype, shape (ints and axis names) and what it holds.

    `details` are extra keys shown to users (e.g. `columns`, `features`, `note`), stored flat.
    """

    name: str
    dtype: str
    shape: list | None = None
    layout: str | None = None
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"name": self.name, "dtype": self.dtype}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.layout is not None:
            out["layout"] = self.layout
        return out | self.details

    @classmethod
    def from_json(cls, raw: object, where: str, check: _Checker) -> TensorSpec:
        spec, where = check.mapping(raw, where), where + "."
        rest = {k: v for k, v in spec.items() if k not in ("name", "dtype", "shape", "layout")}
        return cls(check.text(spec, "name", where), check.text(spec, "dtype", where),
                   check.optional(spec, "shape", list, where), check.optional(spec, "layout", str, where), rest)


@dataclass(frozen=True)
class Classification:
    """What a classifier's probabilities mean and how predict turns them into labels.

    Attributes:
        labels: class names, one per output column.
        problem: `binary`, `multiclass` or `multilabel` (the file's `task`).
        threshold: binary: the probability of class `positive_index` at which it is predicted;
            multilabel: one per label (or one for all); None: argmax (binary and multiclass).
        temperature: the logits were divided by it inside the graph (calibration); 1 = none.
        positive_index: binary: the class the threshold is set for.
    """

    KIND: ClassVar[str] = "classification"
    labels: list[str]
    problem: str
    threshold: float | list[float] | None = None
    temperature: float = 1.0
    positive_index: int = 1

    @property
    def multilabel(self) -> bool:
        return self.problem == "multilabel"

    def to_json(self) -> dict:
        return {"task": self.problem, "labels": list(self.labels), "threshold": self.threshold,
                "temperature": self.temperature, "positive_index": self.positive_index}

    @classmethod
    def from_json(cls, meta: dict, check: _Checker) -> Classification:
        labels = check.strings(meta, "labels")
        threshold = meta.get("threshold")
        if threshold is not None and not (check.is_number(threshold) or (
                isinstance(threshold, list) and all(check.is_number(t) for t in threshold))):
            check.fail("threshold", "a number, a list of numbers or null")
        temperature = meta.get("temperature", 1.0)
        if not check.is_number(temperature) or temperature <= 0:
            check.fail("temperature", "a positive number")
        positive = meta.get("positive_index", _v1_positive_index(meta))
        if not isinstance(positive, int) or not 0 <= positive < max(1, len(labels)):
            check.fail("positive_index", f"an index into the {len(labels)} labels")
        return cls(labels, meta["task"], threshold, float(temperature), positive)


@dataclass(frozen=True)
class Forecast:
    """What a forecaster's quantiles are: channels, window geometry and post-fit calibration.

    Attributes:
        targets: forecast columns (the C channels of input and output).
        look_back: L history steps the graph takes.
        horizon: H steps it forecasts.
        quantiles: the Q levels of the last output axis, 0.5 among them.
        freq: the sampling interval (a polars duration such as `1h`).
        season_length: the season of the seasonal baselines and of MASE.
        interval_calibration: the per-step scale the graph applied to the quantiles, with how it
            was fitted; None: not calibrated.
        ets: Holt-Winters smoothing parameters per channel, fitted on the training part at fit
            time (`alpha`, `beta`, `gamma`, `phi`: lists of C floats), for evaluate's ETS baseline;
            None in models that did not store them.
    """

    KIND: ClassVar[str] = "forecast"
    targets: list[str]
    look_back: int
    horizon: int
    quantiles: list[float]
    freq: str | None
    season_length: int | None
    interval_calibration: dict | None = None
    ets: dict | None = None

    @property
    def median_index(self) -> int:
        return self.quantiles.index(0.5)

    def preprocess_part(self) -> dict:
        """The geometry keys that live in `preprocess`."""
        return {"targets": list(self.targets), "freq": self.freq, "look_back": self.look_back,
                "horizon": self.horizon, "quantiles": list(self.quantiles), "season_length": self.season_length}

    def to_json(self) -> dict:
        return {"task": FORECASTING, "interval_calibration": self.interval_calibration, "ets": self.ets}

    @classmethod
    def from_json(cls, meta: dict, check: _Checker) -> Forecast:
        pre = meta["preprocess"]
        where = "preprocess."
        targets, look_back = check.strings(pre, "targets", where), check.integer(pre, "look_back", where)
        horizon, quantiles = check.integer(pre, "horizon", where), check.present(pre, "quantiles", where)
        if not isinstance(quantiles, list) or not all(check.is_number(q) for q in quantiles) or 0.5 not in quantiles:
            check.fail(where + "quantiles", "a list of levels including 0.5")
        calibration = meta.get("interval_calibration", pre.get("interval_calibration"))  # schema 1 kept a copy there
        if calibration is not None and not isinstance(calibration.get("scale") if isinstance(calibration, dict) else None, list):
            check.fail("interval_calibration", "null or an object with a `scale` list")
        ets = meta.get("ets")
        if ets is not None and not (isinstance(ets, dict) and {"alpha", "beta", "gamma", "phi"} <= set(ets)):
            check.fail("ets", "null or an object with alpha, beta, gamma and phi")
        return cls(targets, look_back, horizon, [float(q) for q in quantiles], check.optional(pre, "freq", str, where),
                   check.optional(pre, "season_length", int, where), calibration, ets)


Kind = Classification | Forecast

#: the output every classifier's graph ends in: (batch, labels) softmax or sigmoid probabilities
PROBABILITIES = TensorSpec("probabilities", "float32")


@dataclass(frozen=True)
class Provenance:
    """Where a model came from: its data, config and weights (the model card's sources)."""

    data: dict = field(default_factory=dict)  # source, sizes, notes of the training data
    data_config: dict = field(default_factory=dict)  # the data settings; evaluate re-splits with them
    backbone: str | None = None
    pretrained: str | None = None  # where the pretrained weights came from (one line)
    config_sha256: str | None = None
    imported_from: str | None = None  # `deepapps import`: the foreign file
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"data": self.data, "data_config": self.data_config, "backbone": self.backbone,
               "pretrained": self.pretrained, "config_sha256": self.config_sha256}
        if self.imported_from is not None:
            out["imported_from"] = self.imported_from
        return out | self.extra

    @classmethod
    def from_json(cls, raw: object, check: _Checker) -> Provenance:
        train = check.mapping(raw, "train")
        known = ("data", "data_config", "backbone", "pretrained", "config_sha256", "imported_from")
        return cls(check.optional(train, "data", dict, "train.") or {},
                   check.optional(train, "data_config", dict, "train.") or {},
                   check.optional(train, "backbone", str, "train."), check.optional(train, "pretrained", str, "train."),
                   check.optional(train, "config_sha256", str, "train."),
                   check.optional(train, "imported_from", str, "train."),
                   {k: v for k, v in train.items() if k not in known})


_COMMON = ("schema_version", "app", "family", "task", "inputs", "outputs", "preprocess", "metrics", "train",
           "version", "created", "export")
_KIND_KEYS = {Classification: ("labels", "threshold", "temperature", "positive_index"),
              Forecast: ("interval_calibration", "ets")}


@dataclass(frozen=True)
class ModelContract:
    """Everything a deepapps ONNX file says about itself.

    Attributes:
        app: the app that made it (predict refuses another app's model).
        family: the kind of network, e.g. `image_classification`, `signal_classification`.
        kind: the task-specific part (`Classification` or `Forecast`).
        inputs, outputs: the graph's tensors as served.
        preprocess: what predict does outside the graph (and, for the record, what the graph
            does inside): owned by the app.
        metrics: validation and test scalars of this file.
        train: provenance.
        version: deepapps version that wrote it; created: ISO time; export: opset, torch
            version, parity check, precision.
        details: the app's own top-level sections (e.g. `clinical`, `decision`).
        schema_version: of the layout it was read from (SCHEMA_VERSION when written).
    """

    app: str
    family: str
    kind: Kind
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocess: dict
    metrics: dict = field(default_factory=dict)
    train: Provenance = field(default_factory=Provenance)
    version: str = ""
    created: str = ""
    export: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def task(self) -> str:
        return FORECASTING if isinstance(self.kind, Forecast) else self.kind.problem

    @property
    def classification(self) -> Classification:
        """The classification kind; a forecaster here is a one-line error."""
        if not isinstance(self.kind, Classification):
            raise ContractError(f"a {self.app} forecasting model, not a classifier")
        return self.kind

    @property
    def forecast(self) -> Forecast:
        if not isinstance(self.kind, Forecast):
            raise ContractError(f"a {self.app} {self.task} classifier, not a forecaster")
        return self.kind

    @property
    def labels(self) -> list[str]:
        return self.classification.labels

    def with_(self, **changes) -> ModelContract:
        """A copy with fields replaced (the contract itself is immutable)."""
        return replace(self, **changes)

    # --- JSON ---------------------------------------------------------------------------------

    def to_json(self) -> dict:
        """The document stored in the file (schema SCHEMA_VERSION)."""
        preprocess = dict(self.preprocess)
        if isinstance(self.kind, Forecast):
            preprocess |= self.kind.preprocess_part()
        head = {"schema_version": SCHEMA_VERSION, "app": self.app, "family": self.family}
        body = {"inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs],
                "preprocess": preprocess, "metrics": self.metrics, "train": self.train.to_json(),
                "version": self.version, "created": self.created, "export": self.export}
        clash = set(self.details) & (set(_COMMON) | set(_KIND_KEYS[type(self.kind)]))
        if clash:
            raise ValueError(f"details may not use the contract's own keys: {sorted(clash)}")
        return head | self.kind.to_json() | body | self.details

    @classmethod
    def from_json(cls, meta: object, source: str) -> ModelContract:
        """Validate and read a metadata document; `source` names the file in errors."""
        check = _Checker(source)
        meta = check.mapping(meta, "metadata")
        schema = meta.get("schema_version", 1)
        if not isinstance(schema, int) or schema < 1:
            check.fail("schema_version", "a positive integer")
        if schema > SCHEMA_VERSION:
            raise ContractError(f"{source}: written by a newer deepapps (model schema {schema}; this release "
                                f"reads up to {SCHEMA_VERSION}): upgrade deepapps")
        app, family, task = check.text(meta, "app"), check.text(meta, "family"), check.text(meta, "task")
        if task not in (*PROBLEMS, FORECASTING):
            check.fail("task", f"one of {', '.join((*PROBLEMS, FORECASTING))}")
        check.mapping(meta.get("preprocess"), "preprocess")
        kind: Kind = Forecast.from_json(meta, check) if task == FORECASTING else Classification.from_json(meta, check)
        inputs = [TensorSpec.from_json(t, f"inputs[{i}]", check) for i, t in enumerate(check.items(meta, "inputs"))]
        outputs = [TensorSpec.from_json(t, f"outputs[{i}]", check) for i, t in enumerate(check.items(meta, "outputs"))]
        if not inputs or not outputs:
            check.fail("inputs" if not inputs else "outputs", "at least one tensor")
        kind_keys = _KIND_KEYS[type(kind)]
        preprocess = dict(meta["preprocess"])
        if isinstance(kind, Forecast):  # the kind holds these (schema 1 also kept the calibration there)
            for key in (*kind.preprocess_part(), "interval_calibration"):
                preprocess.pop(key, None)
        skip = set(_COMMON) | set(kind_keys) | ({"labels", "threshold"} if isinstance(kind, Forecast) else set())
        return cls(
            app=app, family=family, kind=kind, inputs=inputs, outputs=outputs, preprocess=preprocess,
            metrics=check.optional(meta, "metrics", dict) or {},
            train=Provenance.from_json(meta.get("train", {}), check),
            version=check.optional(meta, "version", str) or "", created=check.optional(meta, "created", str) or "",
            export=check.optional(meta, "export", dict) or {},
            details={k: v for k, v in meta.items() if k not in skip}, schema_version=schema,
        )


# --- files ------------------------------------------------------------------------------------
# The typed layer (read_contract, contract_of, write_model) is what code uses; the raw layer
# (read_metadata, set_metadata) moves the document as it is, for display and for tools that only
# copy it (fp16, int8 copies).


def read_contract(path: str | Path) -> ModelContract:
    """The contract of an ONNX file on disk (its weights are not loaded)."""
    return parse_metadata(_raw(_load(path)), str(path))


def contract_of(proto, source: str) -> ModelContract:
    """The contract stored in an in-memory ModelProto."""
    return parse_metadata(_raw(proto), source)


def parse_metadata(raw: str | None, source: str) -> ModelContract:
    """A contract from the raw metadata string (as ONNX Runtime's custom_metadata_map gives it)."""
    if raw is None:
        raise ContractError(f"{source}: not a deepapps model (no '{METADATA_KEY}' metadata)")
    return ModelContract.from_json(_json(raw, source), source)


def write_model(path: str | Path, proto, contract: ModelContract) -> Path:
    """Write an ONNX file with its contract, atomically."""
    set_metadata(proto, contract.to_json())
    return _save(proto, path)


def read_metadata(path: str | Path) -> dict:
    """The metadata document of a file as stored, unvalidated ({} without one)."""
    raw = _raw(_load(path))
    return {} if raw is None else _json(raw, str(path))


def set_metadata(proto, metadata: dict) -> None:
    """Store a metadata document in a ModelProto's metadata_props (replacing an earlier one)."""
    from deepapps.core import __version__

    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key == METADATA_KEY:
            del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=_jsonable)
    proto.producer_name, proto.producer_version = "deepapps", __version__


def copy_with_metadata(proto, out: str | Path, metadata: dict, change, check: bool = True) -> Path:
    """Write `proto` (a converted copy of a model) to `out` with `change(metadata)` as its metadata
    (`metadata`: the original's document): e.g. the precision of an fp16 or int8 copy."""
    import onnx

    set_metadata(proto, change(metadata))
    if check:
        onnx.checker.check_model(proto)
    return _save(proto, out)


def _load(path: str | Path):
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises several types for files it cannot parse
        raise ModelFileError(f"{path}: not a valid ONNX model ({_first_line(exc)})") from None


def _save(proto, path: str | Path) -> Path:
    import onnx

    from deepapps.core.runtime.io import atomic_write

    return atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))


def _raw(proto) -> str | None:
    return next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)


def _json(raw: str, source: str) -> object:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise ContractError(f"{source}: its '{METADATA_KEY}' metadata is not valid JSON") from None


# --- validation -------------------------------------------------------------------------------


class _Checker:
    """Typed field access whose errors name the file and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, name: str, expected: str):
        raise ContractError(f"{self.source}: metadata field '{name}' must be {expected}")

    @staticmethod
    def is_number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def mapping(self, value: object, name: str) -> dict:
        if not isinstance(value, dict):
            self.fail(name, "an object")
        return value

    def present(self, d: dict, key: str, where: str = "") -> object:
        if key not in d:
            raise ContractError(f"{self.source}: metadata field '{where}{key}' is missing")
        return d[key]

    def text(self, d: dict, key: str, where: str = "") -> str:
        value = self.present(d, key, where)
        if not isinstance(value, str) or not value:
            self.fail(where + key, "a non-empty string")
        return value

    def integer(self, d: dict, key: str, where: str = "") -> int:
        value = self.present(d, key, where)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(where + key, "a positive integer")
        return value

    def strings(self, d: dict, key: str, where: str = "") -> list[str]:
        value = self.present(d, key, where)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            self.fail(where + key, "a non-empty list of strings")
        return list(value)

    def items(self, d: dict, key: str) -> list:
        value = self.present(d, key)
        if not isinstance(value, list):
            self.fail(key, "a list")
        return value

    def optional(self, d: dict, key: str, kind: type, where: str = "") -> Any:
        value = d.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) and kind is int):
            self.fail(where + key, f"{kind.__name__} or null")
        return value


def _v1_positive_index(meta: dict) -> int:
    """Schema 1 kept the binary threshold's class in the healthcare section only."""
    clinical = meta.get("clinical")
    threshold = clinical.get("threshold") if isinstance(clinical, dict) else None
    index = threshold.get("positive_index") if isinstance(threshold, dict) else None
    return index if isinstance(index, int) else 1


def _jsonable(obj: object) -> object:
    import numpy as np

    return obj.tolist() if isinstance(obj, (np.ndarray, np.generic)) else str(obj)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
