import pytest
import torch

from freeecho_core.unet3d import PRESETS, TemporalAttention, UNet3D, count_parameters, unet3d_config


def randomised(net: UNet3D) -> UNet3D:
    """The final conv starts at zero (F = 0); give it weights so outputs depend on the whole net."""
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    return net.eval()


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 24), (5, 8, 16), (8, 32, 32)])
def test_tiny_unet_output_shape_equals_input_shape(shape):
    net = randomised(UNet3D(unet3d_config("tiny")))
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        y = net(x, torch.tensor([0.1, -0.5]))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_paper_unet_shape_and_size():
    net = UNet3D(PRESETS["paper"])
    assert 2.8e6 < count_parameters(net) < 3.5e6  # the authors' net: ~3.2 M
    with torch.no_grad():
        y = net(torch.randn(1, 1, 2, 16, 16), torch.zeros(1))
    assert y.shape == (1, 1, 2, 16, 16)


def test_unet_starts_with_zero_output():
    net = UNet3D(unet3d_config("tiny"))
    assert torch.equal(net(torch.randn(1, 1, 2, 8, 8), torch.zeros(1)), torch.zeros(1, 1, 2, 8, 8))


def test_noise_level_changes_the_output():
    net = randomised(UNet3D(unet3d_config("tiny")))
    x = torch.randn(1, 1, 2, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.tensor([-1.0])), net(x, torch.tensor([1.0])), atol=1e-5)


def test_temporal_attention_moves_information_between_frames():
    torch.manual_seed(0)
    attn = TemporalAttention(dim=8, heads=2, dim_head=4, max_rel_distance=4)
    x = torch.randn(1, 8, 6, 3, 3)
    x2 = x.clone()
    x2[:, :, 0] += torch.randn(1, 8, 3, 3)  # not a constant: the channel LayerNorm would remove that
    with torch.no_grad():
        change = (attn(x2) - attn(x)).abs()
    assert change[:, :, 5].max() > 1e-3  # frame 5 sees frame 0
    assert attn.position_bias(12, "cpu").shape == (2, 12, 12)


def test_temporal_bias_depends_only_on_the_clipped_frame_offset():
    attn = TemporalAttention(dim=8, heads=2, dim_head=4, max_rel_distance=2)
    torch.nn.init.normal_(attn.rel_bias.weight)
    bias = attn.position_bias(6, "cpu")
    assert torch.equal(bias[:, 0, 1], bias[:, 3, 4])  # same offset +1
    assert torch.equal(bias[:, 0, 3], bias[:, 0, 5])  # offsets 3 and 5 both clip to 2
    assert not torch.equal(bias[:, 0, 1], bias[:, 1, 0])


def test_unet_with_condition_channels_accepts_still_and_video_maps():
    net = randomised(UNet3D(unet3d_config("tiny", cond_channels=4)))
    x, c = torch.randn(2, 1, 3, 8, 8), torch.zeros(2)
    still = torch.rand(2, 4, 8, 8)
    with torch.no_grad():
        a = net(x, c, still)
        b = net(x, c, still.unsqueeze(2).expand(-1, -1, 3, -1, -1))
        assert torch.allclose(a, b) and not torch.allclose(a, net(x, c, torch.zeros_like(still)), atol=1e-5)


def test_unet_input_errors_are_clear():
    net = UNet3D(unet3d_config("tiny"))
    with pytest.raises(ValueError, match="multiples of 2"):
        net(torch.randn(1, 1, 2, 9, 8), torch.zeros(1))
    with pytest.raises(ValueError, match=r"expected a video \(B, 1, T, H, W\)"):
        net(torch.randn(1, 3, 2, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="cond_channels=0"):
        net(torch.randn(1, 1, 2, 8, 8), torch.zeros(1), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="unknown UNet3D preset"):
        unet3d_config("huge")
    with pytest.raises(ValueError, match="divisible by groups"):
        unet3d_config("tiny", dim=6)
