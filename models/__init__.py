"""Bundled default model files (package data: the FP32 ONNX model and its model card)."""
