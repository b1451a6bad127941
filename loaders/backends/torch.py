"""The ``torch`` backend: a plain ``torch.utils.data.DataLoader`` with per-sample CPU transforms and
worker processes, as in the authors' code. It is the baseline the other backends are measured against."""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset

from ..augment import flip_crop
from ..base import Backend, EpochLoader, epoch_generator


class _Samples(Dataset):
    def __init__(self, images, labels, indices, augment: bool, base_seed: int):
        self.images, self.labels, self.indices, self.augment = images, labels, indices, augment
        self.base_seed = base_seed

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        x = self.images[j].permute(2, 0, 1).float().div_(255)
        if self.augment:  # per-sample, on the CPU, like torchvision transforms in a worker
            # keyed by (epoch's base seed, position): the same with any number of workers
            x = flip_crop(x[None], torch.Generator().manual_seed((self.base_seed + i) % 2**63))[0]
        return x, self.labels[j]


class TorchLoader(EpochLoader):
    def __init__(self, backend: "TorchBackend", split, indices, batch_size, augment, shuffle, drop_last, seed):
        self.backend, self.split, self.augment = backend, split, augment
        super().__init__(indices, backend.split_size(split), batch_size, shuffle, drop_last, seed)

    def epoch(self, epoch: int = 0):
        g = epoch_generator(self.seed, epoch)
        images, labels = self.backend.tensors[self.split]
        # the order is drawn here; the generator also seeds the workers, so an epoch is reproducible
        order = self.order(epoch, g)
        base_seed = int(torch.randint(0, 2**62, (1,), generator=g))
        ds = _Samples(images, labels, order, self.augment, base_seed)
        dl = DataLoader(ds, batch_size=self.batch_size, shuffle=False, drop_last=self.drop_last,
                        num_workers=self.backend.workers, generator=g,
                        pin_memory=self.backend.device.type == "cuda",
                        persistent_workers=False)
        dev = self.backend.device
        for x, y in dl:
            yield self.backend._finish(x.to(dev, non_blocking=True)), y.to(dev, non_blocking=True)


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, dataset, device="cpu", channels_last: bool = False, workers: int | None = None):
        super().__init__(dataset, device, channels_last)
        self.workers = (os.cpu_count() or 1) if workers is None else workers
        # decoded now (a file list learns which files are readable: the split lengths are final)
        self.tensors = {s: (getattr(dataset, s).images, getattr(dataset, s).labels) for s in ("train", "test")}

    def loader(self, split, indices, batch_size, augment=False, shuffle=False, drop_last=False, seed=0):
        return TorchLoader(self, split, indices, batch_size, augment, shuffle, drop_last, seed)
