"""The batches of a run: which dataset items each step of each rank takes, and where they are cut.

Crop ``i`` of a run is a function of ``(seed, i)`` (``SRTrainDataset.crop_params``) and step
``s`` uses items ``(s * world + rank) * batch ...``: a resumed run sees exactly the data it
would have seen, with no data RNG state to save. The crops come from a DataLoader
(``StepBatches``) or, on CUDA, are cut on the device (``TensorCropper``): the same items.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .data import SRTrainDataset, _resize_matrix


class StepBatches(torch.utils.data.Sampler):
    """Batches of item indices for steps ``start..iters-1``; rank r of w takes its own items."""

    def __init__(self, start: int, iters: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.iters, self.batch_size, self.rank, self.world = start, iters, batch_size, rank, world

    def __len__(self) -> int:
        return max(0, self.iters - self.start)

    def __iter__(self):
        for step in range(self.start, self.iters):
            yield step_indices(step, self.batch_size, self.rank, self.world)


def step_indices(step: int, batch_size: int, rank: int = 0, world: int = 1) -> list[int]:
    """Dataset items of ``rank`` at ``step`` (0-based): disjoint over ranks and steps."""
    first = (step * world + rank) * batch_size
    return list(range(first, first + batch_size))


class TensorCropper:
    """The crops of ``SRTrainDataset``, cut and downscaled on the training device.

    The HR images are held on the device as uint8; crop ``i`` uses the same ``(seed, i)`` draws
    as ``SRTrainDataset.crop_hr`` (image, position, flip/rotation) and the LR is the same
    MATLAB-style bicubic as ``degrade`` (one float64 matrix product per axis, rounded to uint8),
    so a run gets the same batches on CPU and GPU (LR may differ by one grey level where the
    float64 sum lands on .5 in a different order). Used on CUDA so data never waits for the CPU.

    Args:
        dataset: the training dataset (its images, crop, scale, seed, augment).
        device: where to hold the images and cut the crops.
    """

    def __init__(self, dataset: SRTrainDataset, device: torch.device):
        self.ds = dataset
        self.device = device
        self.images = [torch.from_numpy(np.ascontiguousarray(img)).to(device) for img in dataset.images]
        n = dataset.crop // dataset.scale
        self.down = torch.from_numpy(_resize_matrix(dataset.crop, n, 1.0 / dataset.scale)).to(device)

    def params(self, index: int) -> tuple[int, int, int, int]:
        """(image, top, left, dihedral code) of item ``index``: the dataset's own draws."""
        return self.ds.crop_params(index)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr, hr) float32 NCHW in [0, 1] on the device for dataset items ``indices``."""
        c = self.ds.crop
        crops = []
        for index in indices:
            k, top, left, code = self.params(index)
            t = self.images[k][top: top + c, left: left + c]
            if code & 1:
                t = t.flip(1)
            if code & 2:
                t = t.flip(0)
            if code & 4:
                t = t.transpose(0, 1)
            crops.append(t)
        hr8 = torch.stack(crops).permute(0, 3, 1, 2)
        lr = torch.matmul(torch.matmul(self.down, hr8.double()), self.down.T)
        lr = lr.round_().clamp_(0, 255).float() / 255.0
        return lr.contiguous(), hr8.float().contiguous() / 255.0


def step_batches(dataset: SRTrainDataset, *, start: int, end: Callable[[], int], batch_size: int, rank: int,
                 world: int, device: torch.device, on_device: bool, workers: int):
    """(lr, hr) batches of steps ``start..end()-1`` for ``rank`` of ``world``.

    Args:
        dataset: the training dataset.
        start: the first step (a resumed run's checkpoint step).
        end: the current end step; read before each batch cut on the device (a ``--time-budget``
            plan may shorten the run), once for the DataLoader (the loop stops at the end).
        batch_size: items per step and rank.
        rank, world: this process's rank and the number of ranks.
        device: the training device.
        on_device: cut the crops on ``device`` (``TensorCropper``) instead of DataLoader workers.
        workers: DataLoader worker processes.
    """
    if on_device:
        cropper = TensorCropper(dataset, device)

        def cut():
            step = start
            while step < end():
                yield cropper.batch(step_indices(step, batch_size, rank, world))
                step += 1

        return cut()
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(start, end(), batch_size, rank, world),
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False)
