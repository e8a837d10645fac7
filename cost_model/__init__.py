"""Static ONNX graph features, kernel grouping and per-op regression (kept as separate pieces)."""
