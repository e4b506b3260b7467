"""BatchNorm folding, ONNX export, parity checks and TensorRT engines (needs torch and onnx)."""
