"""Models, data, metrics, checkpoints and training loops (needs PyTorch).

Import the submodules you need (``srdeploy.train.archs``, ``.data``, ``.metrics``,
``.checkpoint``); nothing is imported here so that ``import srdeploy.train`` stays cheap.
"""
