import pytest
import torch

from lure_fast.models import build_model


@pytest.mark.parametrize("arch,classes,stem,count", [
    ("resnet18", 10, "cifar", 11_173_962),
    ("resnet50", 10, "cifar", 23_520_842),
    ("vgg16_bn", 10, "cifar", 14_728_266),
    ("resnet18", 1000, "imagenet", 11_689_512),   # torchvision's resnet18
    ("wrn50_2", 1000, "imagenet", 68_883_240),    # torchvision's wide_resnet50_2
])
def test_parameter_counts(arch, classes, stem, count):
    m = build_model(arch, classes, stem=stem)
    assert sum(p.numel() for p in m.parameters()) == count


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "wrn50_2", "vgg16_bn"])
def test_output_shape_cifar(arch):
    m = build_model(arch, 10, width=8).eval()
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_stem_keeps_resolution_and_imagenet_stem_reduces_it():
    c = build_model("resnet18", 10, stem="cifar").net
    i = build_model("resnet18", 10, stem="imagenet").net
    x = torch.rand(1, 3, 32, 32)
    assert c.maxpool(c.conv1(x)).shape[-1] == 32
    assert i.maxpool(i.conv1(x)).shape[-1] == 8


def test_normalisation_is_inside_the_model():
    m = build_model("resnet18", 10, width=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(m(x), m.net((x - mean) / std))


def test_one_channel_small_images():
    m = build_model("resnet18", 10, in_channels=1, width=16, mean=(0.3,), std=(0.4,)).eval()
    assert m(torch.rand(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("kwargs,msg", [(dict(arch="resnet34"), "--arch"), (dict(arch="resnet18", stem="x"), "--stem")])
def test_bad_arch(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        build_model(num_classes=10, **kwargs)


def test_vgg_refuses_images_smaller_than_its_pools_in_one_line(tmp_path, capsys):
    from lure_fast.cli import main
    from lure_fast.models import min_image_size
    assert (min_image_size("vgg16_bn"), min_image_size("vgg16_bn", "code"), min_image_size("resnet18")) == (32, 16, 1)
    out = tmp_path / "r"
    assert main(["run", "--preset", "tiny", "--arch", "vgg16_bn", "--quiet", "--out", str(out)]) == 2  # digits: 8x8
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs images of at least 32x32, but the data's are 8x8" in err
