"""Load a deepapps ONNX model with its contract and run it on the best provider."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort

from deepapps.core.contract import METADATA_KEY, ModelContract, parse_metadata
from deepapps.core.errors import DeepappsError, ModelFileError
from deepapps.core.runtime import remote

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass
class OnnxModel:
    """An ONNX Runtime session plus the contract that travels in the file."""

    path: Path
    session: ort.InferenceSession
    contract: ModelContract
    provider: str
    provider_note: str

    @property
    def app(self) -> str:
        return self.contract.app

    @property
    def labels(self) -> list[str]:
        return self.contract.labels

    @cached_property
    def meta(self) -> dict:
        """The metadata document as stored (for display, e.g. /v1/metadata); code reads `contract`."""
        return self.contract.to_json()

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """First output for one batch; on CUDA through IO binding (output stays on device)."""
        if self.provider != CUDA:
            return self.session.run(None, feeds)[0]
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output(self.session.get_outputs()[0].name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def load_model(path: str | Path, provider: str = "auto", app: str | None = None,
               session_config: dict[str, str] | None = None, model_bytes: bytes | None = None) -> OnnxModel:
    """Open `path` with ONNX Runtime, read its contract and check that `app` made it.

    Args:
        path: the .onnx file or its URL (s3://, gs://, az://, hdfs://, https://: fetched into the
            local cache, see `core.runtime.remote`); with `model_bytes`: only the name it is reported by.
        provider: `auto` (CUDA when it really initialises, else CPU), `cpu` or `cuda`.
        app: expected app name; a model made by another app is refused.
        session_config: ONNX Runtime session config entries, e.g.
            {"session.intra_op.allow_spinning": "0"} for batch scoring on shared cores.
        model_bytes: the serialised model, when it is not (yet) a file (fit evaluates the
            graph it is about to write).
    """
    name = str(path) if remote.is_remote(path) else str(Path(path))  # a remote model: named by its URL
    if model_bytes is None and remote.is_remote(name):
        path = remote.cached_file(name)  # ONNX Runtime opens local files: fetched into the cache
    path = Path(path)
    if model_bytes is None and not path.is_file():
        raise ModelFileError(f"{name}: no such model file")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    for key, value in (session_config or {}).items():
        options.add_session_config_entry(key, value)
    wanted = _providers(provider)
    ort.set_default_logger_severity(4)  # a failed CUDA start is reported below in one line instead
    try:
        session = ort.InferenceSession(model_bytes if model_bytes is not None else str(path),
                                       sess_options=options, providers=wanted)
    except Exception as exc:  # ORT raises several types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{name}: not a valid ONNX model ({first[:200]})") from None
    finally:
        ort.set_default_logger_severity(3)
    contract = parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), name)
    if app is not None and contract.app != app:
        raise ModelFileError(
            f"{name}: made by the {contract.app} app, not {app}; use `deepapps {contract.app} ...`"
        )
    used = session.get_providers()[0]
    if provider == "cuda" and used != CUDA:
        raise DeepappsError(f"{name}: --provider cuda asked, but CUDA did not initialise")
    return OnnxModel(path=path, session=session, contract=contract, provider=used,
                     provider_note=_provider_note(provider, used))


def _providers(provider: str) -> list[str]:
    if provider not in ("auto", "cpu", "cuda"):
        raise DeepappsError(f"--provider {provider}: choose auto, cpu or cuda")
    available = ort.get_available_providers()
    if provider == "cuda" and CUDA not in available:
        raise DeepappsError("--provider cuda: this onnxruntime build has no CUDA provider")
    if provider in ("auto", "cuda") and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def _provider_note(asked: str, used: str) -> str:
    if used == CUDA:
        return f"provider: {CUDA} (GPU, IO binding)"
    if asked == "cpu":
        return f"provider: {CPU} (asked for cpu)"
    if CUDA in ort.get_available_providers():
        return f"provider: {CPU} (CUDA provider present but did not initialise: no usable GPU)"
    return f"provider: {CPU} (this onnxruntime build has no CUDA provider)"


def say_provider(model: OnnxModel) -> None:
    print(model.provider_note, file=sys.stderr)
