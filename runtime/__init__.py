"""Tiled super-resolution inference without PyTorch: numpy + onnxruntime/TensorRT + OpenCV."""
