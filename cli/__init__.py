"""srdeploy: SRResNet/SRGAN super-resolution from PyTorch training to verified deployment.

Subpackages (each importable alone; nothing heavy happens at import time):

- ``srdeploy.train``: models, data, metrics, checkpoints, training loops (needs torch).
- ``srdeploy.export``: BatchNorm folding, ONNX export, parity checks, TensorRT engines.
- ``srdeploy.runtime``: tiled inference on ONNX Runtime / TensorRT without torch.
"""

__version__ = "0.1.0"
