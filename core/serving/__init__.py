"""HTTP serving of deepapps ONNX models (no torch)."""
