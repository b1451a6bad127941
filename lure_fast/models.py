"""Models of the paper: ResNet-18 / ResNet-50 / Wide-ResNet-50-2 and VGG16-BN, with the CIFAR stem
(3x3 conv, stride 1, no max-pool) or the ImageNet stem, and input normalisation inside the model
(the data stays in [0, 1], as in the authors' code). ``width`` scales every channel count (64 is the
standard network; the embedded digits preset uses a narrow one so it runs in minutes on a CPU).
"""
from __future__ import annotations

import torch
from torch import nn

ARCHS = ("resnet18", "resnet50", "wrn50_2", "vgg16_bn")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inp, planes, stride=1, base_width=64):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inp, planes, stride=1, base_width=64):
        super().__init__()
        mid = int(planes * base_width / 64)
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inp, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        o = self.relu(self.bn1(self.conv1(x)))
        o = self.relu(self.bn2(self.conv2(o)))
        o = self.bn3(self.conv3(o))
        return self.relu(o + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes, in_channels=3, width=64, base_width=64, stem="cifar"):
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, w[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, w[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        inp, stages = w[0], []
        for i, (planes, n) in enumerate(zip(w, layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(inp, planes, 2 if (i > 0 and j == 0) else 1, base_width))
                inp = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inp, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def later_layers(self) -> list[nn.Module]:
        """Blocks 3 and 4 and the classifier: what later-layer forgetting resets."""
        return [self.layer3, self.layer4, self.fc]

    def early_layers(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.layer1, self.layer2]


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    """VGG16-BN. CIFAR stem: global pooling and one linear classifier (the usual CIFAR variant);
    ImageNet stem: torchvision's 7x7-pooled three-layer classifier. ``variant="code"``: the authors'
    models/VGG.py: no fifth max-pool (the last block's 2x2 map is average-pooled), one linear classifier
    whatever the stem, convs from kaiming_normal (fan-out) with zero biases, BatchNorm at 1 and 0, the
    classifier from N(0, 0.01) with a zero bias."""

    def __init__(self, num_classes, in_channels=3, width=64, stem="cifar", variant="paper"):
        super().__init__()
        layers, inp = [], in_channels
        for v in (VGG16 if variant == "paper" else VGG16[:-1]):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                c = v * width // 64
                layers += [nn.Conv2d(inp, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                inp = c
        self.features = nn.Sequential(*layers)
        if stem == "cifar" or variant == "code":
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(inp, num_classes))
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(7)
            self.classifier = nn.Sequential(nn.Linear(inp * 49, 4096), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                                            nn.Linear(4096, num_classes))
        if variant == "code":
            self._code_init()

    @torch.no_grad()
    def _code_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        if x.shape[-1] > 1 or self.avgpool.output_size != 1:
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))

    def later_layers(self) -> list[nn.Module]:
        """Conv blocks 4 and 5 (after the third max-pool) and the classifier."""
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        return list(self.features[pools[2] + 1:]) + [self.classifier]

    def early_layers(self) -> list[nn.Module]:
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        return list(self.features[:pools[2] + 1])


class LureNet(nn.Module):
    """``normalize`` then ``net``: takes float images in [0, 1], [B, C, H, W]; returns logits [B, classes]."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x):
        return self.net(self.normalize(x))


def min_image_size(arch: str, vgg: str = "paper") -> int:
    """The smallest square image ``arch`` takes: VGG16-BN halves it at each max-pool (five, the authors'
    variant four); the ResNets' CIFAR stem takes any size."""
    if arch == "vgg16_bn":
        return 32 if vgg == "paper" else 16
    return 1


def build_model(arch: str, num_classes: int, in_channels: int = 3, width: int = 64, stem: str = "cifar",
                mean=CIFAR10_MEAN, std=CIFAR10_STD, vgg: str = "paper") -> LureNet:
    """``vgg``: ``paper`` (torchvision's VGG16-BN layout) or ``code`` (the authors' models/VGG.py); only
    ``--arch vgg16_bn`` reads it."""
    if arch not in ARCHS:
        raise ValueError(f"--arch {arch}: unknown; choose one of {', '.join(ARCHS)}")
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"--stem {stem}: unknown; choose cifar or imagenet")
    if width < 1:
        raise ValueError(f"--width must be at least 1, got {width}")
    if arch == "resnet18":
        net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, width, stem=stem)
    elif arch == "resnet50":
        net = ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, width, stem=stem)
    elif arch == "wrn50_2":
        net = ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, width, base_width=128, stem=stem)
    else:
        net = VGG(num_classes, in_channels, width, stem, vgg)
    if len(mean) != in_channels:
        raise ValueError(f"normalisation has {len(mean)} channels but the images have {in_channels}")
    return LureNet(net, mean, std)
