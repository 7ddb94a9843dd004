"""Serving side: ONNX Runtime, numpy, pillow, polars. Nothing here may import torch."""
