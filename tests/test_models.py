import pytest
import torch

from ssl_dynamics.models import build_network, count_parameters


def test_thesis_parameter_count():
    # docs/science.md: the CIFAR ResNet-18 with a 10-way head has 11,173,962 parameters.
    assert count_parameters(build_network("resnet18_cifar", 10)) == 11_173_962


def test_features_are_512d_and_outputs_named():
    net = build_network("resnet18_cifar", 128, width=64).eval()
    out = net(torch.rand(2, 3, 32, 32))
    assert out["feats"].shape == (2, 512) and out["out"].shape == (2, 128)
    assert torch.allclose(net.features(torch.zeros(1, 3, 32, 32)), net(torch.zeros(1, 3, 32, 32))["feats"])


def test_width_scales_network():
    net = build_network("resnet18_cifar", 10, width=4)
    assert net.backbone.num_features == 32
    assert net(torch.rand(3, 3, 32, 32))["out"].shape == (3, 10)


def test_no_maxpool_feature_map_is_4x4():
    net = build_network("resnet18_cifar", 10, width=4).backbone
    assert net.forward_to(torch.rand(1, 3, 32, 32), 4).shape[-2:] == (4, 4)


def test_timm_backbone_by_name():
    net = build_network("timm:resnet10t", 10)
    assert net(torch.rand(2, 3, 32, 32))["out"].shape == (2, 10)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_network("vgg", 10)
