"""deepapps core: shared training (torch) and serving (ONNX Runtime, no torch) pieces."""

__version__ = "0.1.0"
