"""Errors that the CLI turns into one line and exit code 2 (no traceback)."""


class DeepappsError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(DeepappsError, ValueError):
    """An unknown or invalid configuration value."""


class DataError(DeepappsError):
    """A missing, empty, corrupt or unusable data input."""


class ModelFileError(DeepappsError):
    """An ONNX file that is missing, corrupt, or made by another app."""


class ExportParityError(DeepappsError):
    """The exported ONNX model disagrees with the PyTorch model."""
