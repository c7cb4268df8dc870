"""The network F of paper eq. (4): a 3D UNet with temporal attention (paper section 3, "Implementation").

A factorised space-time UNet in the spirit of Ho et al. (video diffusion models) and the authors' net:
per-frame (1, 3, 3) convolutions with GroupNorm and a noise-embedding scale/shift, linear spatial attention
per frame at every level, full spatial attention in the middle, attention over frames with a learned
relative-position bias at every level, one skip connection per level. Videos are (B, C, T, H, W).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class UNet3DConfig:
    channels: int = 1  # grey echo frames in and out (the authors fed 3 identical channels)
    cond_channels: int = 0  # extra input channels for a condition map (Cls-Free: one-hot ED labels)
    dim: int = 32  # channels at full resolution (authors: 32)
    dim_mults: tuple[int, ...] = (1, 2, 4)  # channel multiplier per level; each level but the last halves H, W
    res_blocks: int = 2  # residual blocks per level (authors: 2)
    attn_heads: int = 8  # heads of every attention layer (8 x 32 gives the authors' ~3.1 M parameters)
    attn_dim_head: int = 32  # channels per head
    groups: int = 8  # GroupNorm groups in the residual blocks
    max_rel_distance: int = 32  # temporal attention: relative frame offsets are clipped to +-this

    def __post_init__(self):
        if any(self.dim * m % self.groups for m in self.dim_mults):
            raise ValueError(f"dim * each of dim_mults must be divisible by groups={self.groups}")

    @property
    def downsampling(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (len(self.dim_mults) - 1)


PRESETS = {
    "paper": UNet3DConfig(),
    # Sized for a 2-core CPU (0.52 M parameters): dim 16, one residual block per level, 4 heads of 16.
    "cpu": UNet3DConfig(dim=16, res_blocks=1, attn_heads=4, attn_dim_head=16),
    "tiny": UNet3DConfig(dim=8, dim_mults=(1, 2), res_blocks=1, attn_heads=2, attn_dim_head=8, groups=4),
}


def unet3d_config(preset: str = "paper", **overrides) -> UNet3DConfig:
    """A preset configuration (`paper` or `tiny`) with some fields replaced."""
    if preset not in PRESETS:
        raise ValueError(f"unknown UNet3D preset {preset!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[preset], **overrides)


class SinusoidalEmbedding(nn.Module):
    """Transformer sinusoidal embedding of a scalar per sample (here c_noise = ln(sigma) / 4)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000) * torch.arange(half) / (half - 1)))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.reshape(-1, 1).float() * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis (dim 1) of a (B, C, T, H, W) tensor."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1, dim, 1, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * (var + self.eps).rsqrt() * self.gain


def spatial_conv(dim_in: int, dim_out: int) -> nn.Conv3d:
    """A 3 x 3 convolution applied to each frame on its own: kernel (1, 3, 3)."""
    return nn.Conv3d(dim_in, dim_out, (1, 3, 3), padding=(0, 1, 1))


class ResBlock(nn.Module):
    """Two conv-GroupNorm-SiLU blocks; the noise embedding sets a scale and shift after the first norm."""

    def __init__(self, dim_in: int, dim_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * dim_out))
        self.conv1, self.norm1 = spatial_conv(dim_in, dim_out), nn.GroupNorm(groups, dim_out)
        self.conv2, self.norm2 = spatial_conv(dim_out, dim_out), nn.GroupNorm(groups, dim_out)
        self.skip = nn.Conv3d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(self.conv1(x)) * (1 + scale) + shift)
        h = F.silu(self.norm2(self.conv2(h)))
        return h + self.skip(x)


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1 x 1 `conv` applied to x of shape (N, C_in, pixels) as one batched matrix product.

    The same maths as conv(x) on (N, C_in, H, W), but several times faster on the CPU than the
    convolution kernel for the wide (C_out = 768) projections of the attention layers."""
    N = x.shape[0]
    weight = conv.weight.flatten(1).expand(N, -1, -1)
    if conv.bias is None:
        return torch.bmm(weight, x)
    return torch.baddbmm(conv.bias[:, None].expand(N, -1, x.shape[-1]), weight, x)


class SpatialLinearAttention(nn.Module):
    """Linear attention over the pixels of each frame (Shen et al. 2021): cost linear in H * W."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.norm = ChannelLayerNorm(dim)
        self.to_qkv = nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False)
        self.to_out = nn.Conv2d(heads * dim_head, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        frames = self.norm(x).transpose(1, 2).reshape(B * T, C, H * W)
        q, k, v = pointwise(self.to_qkv, frames).reshape(B * T, 3, self.heads, -1, H * W).unbind(1)
        q = q.softmax(dim=-2) * self.scale  # over the channels of a head
        k = k.softmax(dim=-1)  # over the pixels
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q).reshape(B * T, -1, H * W)
        out = pointwise(self.to_out, out).reshape(B, T, C, H, W).transpose(1, 2)
        return x + out


class SpatialAttention(nn.Module):
    """Full softmax attention over the pixels of each frame (used at the lowest resolution)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.norm = ChannelLayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 4, 1).reshape(B * T, H * W, C)
        q, k, v = self.to_qkv(tokens).reshape(B * T, H * W, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B * T, H * W, -1)
        out = self.to_out(out).reshape(B, T, H, W, C).permute(0, 4, 1, 2, 3)
        return x + out


class TemporalAttention(nn.Module):
    """Attention over the frames at each pixel, with a learned bias per head and relative frame offset."""

    def __init__(self, dim: int, heads: int, dim_head: int, max_rel_distance: int):
        super().__init__()
        self.heads, self.max_rel_distance = heads, max_rel_distance
        self.norm = ChannelLayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim)
        self.rel_bias = nn.Embedding(2 * max_rel_distance + 1, heads)

    def position_bias(self, T: int, device) -> torch.Tensor:
        """(heads, T, T) additive bias indexed by the clipped offset j - i."""
        pos = torch.arange(T, device=device)
        offset = (pos[None, :] - pos[:, None]).clamp(-self.max_rel_distance, self.max_rel_distance)
        return self.rel_bias(offset + self.max_rel_distance).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        tokens = self.norm(x).permute(0, 3, 4, 2, 1).reshape(B * H * W, T, C)
        q, k, v = self.to_qkv(tokens).reshape(B * H * W, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # A 4-D (1, heads, T, T) mask: with the 3-D one SDPA falls back to its slow "math" kernel.
        bias = self.position_bias(T, x.device).to(q.dtype)[None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = self.to_out(out.transpose(1, 2).reshape(B * H * W, T, -1))
        return x + out.reshape(B, H, W, T, C).permute(0, 4, 3, 1, 2)


class Level(nn.Module):
    """Residual blocks, then spatial and temporal attention, at one resolution of the UNet."""

    def __init__(self, dims: list[int], emb_dim: int, cfg: UNet3DConfig, full_spatial_attention=False):
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(d_in, d_out, emb_dim, cfg.groups) for d_in, d_out in zip(dims[:-1], dims[1:])
        )
        attn = SpatialAttention if full_spatial_attention else SpatialLinearAttention
        self.spatial_attn = attn(dims[-1], cfg.attn_heads, cfg.attn_dim_head)
        self.temporal_attn = TemporalAttention(dims[-1], cfg.attn_heads, cfg.attn_dim_head, cfg.max_rel_distance)
        self.checkpointing = False  # see UNet3D.set_activation_checkpointing

    def run(self, block: nn.Module, *args) -> torch.Tensor:
        """block(*args); with checkpointing (and gradients on) its activations are recomputed in backward."""
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = self.run(block, x, emb)
        return self.run(self.temporal_attn, self.run(self.spatial_attn, x))


class UNet3D(nn.Module):
    """F(x, c_noise, cond) of paper eq. (4). `cond` (B, cond_channels, [T,] H, W) joins the input channels."""

    def __init__(self, config: UNet3DConfig = PRESETS["paper"]):
        super().__init__()
        self.config = cfg = config
        widths = [cfg.dim * m for m in cfg.dim_mults]
        emb_dim = 4 * cfg.dim
        self.embed_noise = nn.Sequential(
            SinusoidalEmbedding(cfg.dim), nn.Linear(cfg.dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.init_conv = nn.Conv3d(cfg.channels + cfg.cond_channels, cfg.dim, (1, 7, 7), padding=(0, 3, 3))
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        d_in = cfg.dim
        for d_out in widths:
            self.down.append(Level([d_in] + [d_out] * cfg.res_blocks, emb_dim, cfg))
            self.downsample.append(nn.Conv3d(d_out, d_out, (1, 4, 4), (1, 2, 2), (0, 1, 1)))
            d_in = d_out
        self.downsample[-1] = nn.Identity()
        self.mid = Level([d_in, d_in, d_in], emb_dim, cfg, full_spatial_attention=True)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for d_skip, d_out in zip(reversed(widths), reversed([cfg.dim] + widths[:-1])):
            self.up.append(Level([d_in + d_skip] + [d_out] * cfg.res_blocks, emb_dim, cfg))
            self.upsample.append(nn.ConvTranspose3d(d_out, d_out, (1, 4, 4), (1, 2, 2), (0, 1, 1)))
            d_in = d_out
        self.upsample[-1] = nn.Identity()
        self.final_block = ResBlock(2 * cfg.dim, cfg.dim, emb_dim, cfg.groups)
        self.final_conv = nn.Conv3d(cfg.dim, cfg.channels, 1)
        nn.init.zeros_(self.final_conv.weight)  # F = 0 at initialisation, so D = c_skip x (as in EDM)
        nn.init.zeros_(self.final_conv.bias)

    def set_activation_checkpointing(self, enabled: bool = True) -> UNet3D:
        """Keep only each block's input for the backward pass and recompute the rest there (Chen et al. 2016).

        Same outputs and gradients, about one more forward pass of compute, and a fraction of the activation
        memory: the paper's batch of 16 clips of 24 x 128 x 128 needs it to fit one 80 GB GPU. Returns self."""
        for module in self.modules():
            if isinstance(module, Level):
                module.checkpointing = enabled
        return self

    def check_input(self, x: torch.Tensor, cond: torch.Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.channels:
            raise ValueError(f"expected a video (B, {cfg.channels}, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[-1] % cfg.downsampling or x.shape[-2] % cfg.downsampling:
            raise ValueError(f"H and W must be multiples of {cfg.downsampling}, got {tuple(x.shape[-2:])}")
        if (cond is None) != (cfg.cond_channels == 0):
            raise ValueError(f"this net takes cond_channels={cfg.cond_channels}; cond given: {cond is not None}")
        if cond is not None and (cond.shape[0] != x.shape[0] or cond.shape[1] != cfg.cond_channels):
            raise ValueError(f"cond must be (B, {cfg.cond_channels}, [T,] H, W), got {tuple(cond.shape)}")

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(x, cond)
        if cond is not None:
            cond = cond.to(x.dtype)
            cond = cond.unsqueeze(2).expand(-1, -1, x.shape[2], -1, -1) if cond.ndim == 4 else cond
            x = torch.cat([x, cond], dim=1)
        emb = self.embed_noise(c_noise.expand(x.shape[0])).to(x.dtype)
        h = self.init_conv(x)
        first, skips = h, []
        for level, downsample in zip(self.down, self.downsample):
            h = level(h, emb)
            skips.append(h)
            h = downsample(h)
        h = self.mid(h, emb)
        for level, upsample in zip(self.up, self.upsample):
            h = upsample(level(torch.cat([h, skips.pop()], dim=1), emb))
        return self.final_conv(self.final_block(torch.cat([h, first], dim=1), emb))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
