"""The ``memory`` backend: the whole split held as one uint8 tensor on the device; batches are
gathered, converted and augmented there (GPU-side on CUDA). Fastest for data that fits."""
from __future__ import annotations

import torch

from ..augment import apply_flip_crop, crop_padding, draw_flip_crop
from ..base import Backend, EpochLoader, epoch_generator, unit_divisor


class MemoryLoader(EpochLoader):
    def __init__(self, backend: "MemoryBackend", split: str, indices, batch_size: int, augment: bool,
                 shuffle: bool, drop_last: bool, seed: int):
        self.backend, self.split, self.augment = backend, split, augment
        backend.split_size(split)  # names a bad split in one line
        self.images, self.labels = backend.tensors[split]
        super().__init__(indices, len(self.labels), batch_size, shuffle, drop_last, seed)

    def epoch(self, epoch: int = 0):
        g = epoch_generator(self.seed, epoch)
        dev = self.images.device
        order = torch.from_numpy(self.order(epoch, g)).to(dev, non_blocking=True)
        pad = crop_padding(self.images.shape[2])
        aug = draw_flip_crop(len(order), g, pad).to(dev, non_blocking=True) if self.augment else None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx].float().div_(self.backend.divisor)
            if aug is not None:
                x = apply_flip_crop(x, aug[start:start + self.batch_size], pad)
            yield self.backend._finish(x), self.labels[idx]


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self, dataset, device="cpu", channels_last: bool = False):
        super().__init__(dataset, device, channels_last)
        # [N, H, W, C] -> [N, C, H, W] once, on the device
        self.tensors = {s: (getattr(dataset, s).images.permute(0, 3, 1, 2).contiguous().to(self.device),
                            getattr(dataset, s).labels.to(self.device)) for s in ("train", "test")}
        self.divisor = unit_divisor(self.device)

    def loader(self, split, indices, batch_size, augment=False, shuffle=False, drop_last=False, seed=0):
        return MemoryLoader(self, split, indices, batch_size, augment, shuffle, drop_last, seed)
