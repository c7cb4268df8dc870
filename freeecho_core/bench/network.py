"""The network alone: one evaluation D(x, sigma) of the preconditioned 3D UNet (per NFE), its FLOPs and
activation memory, the attention and convolution variants that were tried, and a torch.profiler summary.

`reference` mode is the authors' cost profile: 3 identical grey input channels, float32.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from freeecho_core.bench.timing import autocast, check_video_size, environment, time_call, timing
from freeecho_core.checkpoint import code_version
from freeecho_core.edm import EDMPrecond
from freeecho_core.unet3d import Level, UNet3D, count_parameters, pointwise, unet3d_config


REFERENCE_CHANNELS = 3  # the authors fed 3 identical grey channels


def build_denoiser(preset: str, *, channels: int = 1, device="cpu", channels_last: bool = False,
                   compile: bool = False, seed: int = 0) -> tuple[torch.nn.Module, EDMPrecond]:
    """A UNet3D preset with random weights in eval mode and its EDM denoiser (optionally channels-last 3-D
    weights and torch.compile'd). Returns (net, denoiser)."""
    torch.manual_seed(seed)
    net = UNet3D(unet3d_config(preset, channels=channels)).to(device).eval()
    # A trained net's last layer is not zero: with EDM's zero initialisation D = c_skip x, and every variant
    # of the network would agree trivially.
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    if channels_last:
        for p in net.parameters():
            if p.ndim == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    D = EDMPrecond(torch.compile(net) if compile else net)
    return net, D


def video(batch: int, channels: int, frames: int, size: int, device, channels_last: bool = False) -> torch.Tensor:
    x = torch.rand(batch, 1, frames, size, size, device=device) * 2 - 1
    x = x.expand(-1, channels, -1, -1, -1).contiguous()  # the reference: identical channels
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x


def forward_gflop(preset: str, channels: int, frames: int, size: int) -> float:
    """Matrix-multiply and convolution GFLOP (2 per multiply-add) of one evaluation of one video, counted by
    torch's FlopCounterMode on the meta device (no compute). Elementwise work is not counted."""
    net = UNet3D(unet3d_config(preset, channels=channels)).to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, channels, frames, size, size, device="meta"), torch.zeros(1, device="meta"))
    return counter.get_total_flops() / 1e9


def bench_forward(
    preset: str, *, batch: int = 1, frames: int = 8, size: int = 64, device: str = "cpu",
    dtype: str = "float32", repeats: int = 3, seed: int = 0, channels: int = 1, channels_last: bool = False,
    compile: bool = False, warmup: int = 1, reference_output: torch.Tensor | None = None,
) -> dict:
    """Seconds per network evaluation D(x, sigma) of a UNet3D preset on a (batch, channels, frames, size, size)
    video. channels=3 in float32 is the authors' cost profile. With `reference_output` (the float32 output of
    the same seeded net and input, or of its first samples) the record holds the largest absolute deviation of this variant's output
    from it: `max_abs_diff`, on x0_hat in [-1, 1] units."""
    check_video_size(preset, size)
    dev = torch.device(device)
    net, D = build_denoiser(preset, channels=channels, device=dev, channels_last=channels_last,
                            compile=compile, seed=seed)
    x = video(batch, channels, frames, size, dev, channels_last)
    sigma = torch.full((batch,), 1.0, device=dev)

    def evaluate():
        with torch.no_grad(), autocast(dev, dtype):
            return D(x, sigma)

    times = time_call(evaluate, dev, repeats, warmup)
    gflop = forward_gflop(preset, channels, frames, size)
    record = {
        "benchmark": "forward", "mode": "reference" if channels == REFERENCE_CHANNELS else "ours",
        "preset": preset, "parameters": count_parameters(net), "shape": list(x.shape), "batch": batch,
        "dtype": dtype, "channels_last": channels_last, "compiled": compile,
        **timing(times, batch, "video evaluations/s", warmup), "extrapolated": False,
    }
    record["seconds_per_video"] = record["seconds_median"] / batch
    record["gflop_per_video"] = gflop
    record["achieved_tflops"] = gflop * batch / record["seconds_median"] / 1e3
    if reference_output is not None:
        out = evaluate().float()[: len(reference_output)]  # a larger batch: its first samples are the same
        record["max_abs_diff"] = float((out - reference_output.to(out.device)).abs().max())
    return record | environment(dev)


def forward_output(preset: str, *, batch: int, frames: int, size: int, device="cpu", seed: int = 0) -> torch.Tensor:
    """The float32 output D(x, sigma = 1) of the seeded net on the seeded input that `bench_forward` times."""
    _, D = build_denoiser(preset, device=device, seed=seed)
    with torch.no_grad():
        return D(video(batch, 1, frames, size, device), torch.ones(batch, device=device))


def activation_memory(preset: str = "paper", *, batch: int = 16, frames: int = 24, size: int = 128) -> dict:
    """GB that autograd keeps for the backward pass of one float32 training forward, counted on the meta device
    (no compute, any machine): `without_checkpointing` (every saved tensor, views of one tensor counted once)
    and an estimate `with_checkpointing` (block inputs and what is saved outside the blocks, plus the largest
    block's activations, rebuilt one block at a time in backward). bf16 autocast roughly halves both;
    attention and convolution kernels on a GPU save somewhat different tensors."""
    net = UNet3D(unet3d_config(preset)).to("meta")
    x, c_noise = torch.zeros(batch, 1, frames, size, size, device="meta"), torch.zeros(batch, device="meta")
    blocks = [b for m in net.modules() if isinstance(m, Level) for b in (*m.blocks, m.spatial_attn, m.temporal_attn)]
    seen, per_block, inputs = {}, [], {}

    def pack(t):
        base = t if t._base is None else t._base
        seen[id(base)] = base.numel() * base.element_size()
        return t

    def saved_bytes():
        return sum(seen.values())

    starts = []
    hooks = [b.register_forward_pre_hook(lambda m, a: starts.append(saved_bytes())) for b in blocks]
    hooks += [b.register_forward_hook(lambda m, a, out: per_block.append(saved_bytes() - starts.pop())) for b in blocks]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x, c_noise)
    without = saved_bytes()
    for h in hooks:
        h.remove()
    seen.clear()
    hooks = [b.register_forward_pre_hook(lambda m, a: inputs.__setitem__(id(a[0]), a[0].numel() * 4)) for b in blocks]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net.set_activation_checkpointing(True)(x, c_noise)
    for h in hooks:
        h.remove()
    return {"benchmark": "activation_memory", "preset": preset, "shape": list(x.shape), "batch": batch,
            "dtype": "float32", "without_checkpointing_gb": without / 1e9,
            "with_checkpointing_gb": (saved_bytes() + sum(inputs.values()) + max(per_block)) / 1e9,
            "largest_block_gb": max(per_block) / 1e9, "estimated": True, "extrapolated": False,
            "torch": torch.__version__, "code_version": code_version()}


def op_variants(frames: int, size: int, device, dim: int = 32, heads: int = 8, dim_head: int = 32) -> dict:
    """Alternative implementations of the full-resolution hot spots: name -> {variant: fn()} (the first
    variant is the baseline). Inputs are random, at the UNet's first level (dim channels, frames x size^2)."""
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(1, dim, frames, size, size, device=device, generator=g)
    w3 = torch.randn(dim, dim, 1, 3, 3, device=device, generator=g) * 0.05
    x_cl, w3_cl = (t.contiguous(memory_format=torch.channels_last_3d) for t in (x, w3))
    qkv_conv = torch.nn.Conv2d(dim, 3 * heads * dim_head, 1, bias=False).to(device)
    frames_2d = x.transpose(1, 2).reshape(frames, dim, size, size)
    q, k, v = (torch.randn(size * size, heads, frames, dim_head, device=device, generator=g) for _ in range(3))
    bias = torch.randn(heads, frames, frames, device=device, generator=g)

    def per_frame_conv2d():
        y = F.conv2d(frames_2d, w3[:, :, 0], padding=1)
        return y.reshape(1, frames, dim, size, size).transpose(1, 2)

    return {
        "temporal attention, relative-position bias mask": {
            "3-D mask (heads, T, T): math kernel": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
            "4-D mask (1, heads, T, T): fused kernel [kept]": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias[None]),
        },
        "1x1 projection to q, k, v (32 -> 768 channels)": {
            "Conv2d 1x1": lambda: qkv_conv(frames_2d).flatten(2),
            "batched matmul (unet3d.pointwise) [kept]": lambda: pointwise(qkv_conv, frames_2d.flatten(2)),
        },
        "per-frame 3x3 convolution": {
            "Conv3d (1, 3, 3) [kept]": lambda: F.conv3d(x, w3, padding=(0, 1, 1)),
            "Conv2d on the frames (reshape)": per_frame_conv2d,
            "Conv3d channels-last-3d": lambda: F.conv3d(x_cl, w3_cl, padding=(0, 1, 1)),
        },
    }


def bench_op_variants(*, frames: int, size: int, device: str = "cpu", repeats: int = 3) -> list[dict]:
    """Time each variant of `op_variants`; record its speedup over the op's baseline and its largest
    absolute difference from the baseline's output."""
    dev = torch.device(device)
    records = []
    with torch.no_grad():
        for op, variants in op_variants(frames, size, dev).items():
            baseline_out, baseline_s = None, None
            for variant, fn in variants.items():
                out = fn()
                times = time_call(fn, dev, repeats, warmup=0)
                baseline_out = out if baseline_out is None else baseline_out
                record = {"benchmark": "op", "op": op, "variant": variant, "shape": [1, 32, frames, size, size],
                          "batch": 1, "dtype": "float32", **timing(times, 1, "calls/s", 1), "extrapolated": False,
                          "max_abs_diff": float((out.float() - baseline_out.float()).abs().max())}
                baseline_s = baseline_s or record["seconds_median"]
                records.append(record | {"speedup": baseline_s / record["seconds_median"]} | environment(dev))
    return records


def profile_summary(fn, device, rows: int = 15) -> dict:
    """Where the time of one fn() call goes: the `rows` operators with the most self time (device time on
    CUDA, CPU time otherwise), in seconds and as shares of the total."""
    from torch.profiler import ProfilerActivity, profile

    dev = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    fn()
    with profile(activities=activities) as prof:
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events)
    return {"total_seconds": total / 1e6, "top_ops": [
        {"name": e.key, "calls": e.count, "self_seconds": getattr(e, key) / 1e6, "share": getattr(e, key) / total}
        for e in events[:rows]]}


def bench_profile(what: str, preset: str, *, batch: int, frames: int, size: int, device="cpu",
                  dtype: str = "float32", checkpointing: bool = False) -> dict:
    """A profiler summary of one network evaluation (`forward`) or one training step (`training`)."""
    dev = torch.device(device)
    net, D = build_denoiser(preset, device=dev)
    x, sigma = video(batch, 1, frames, size, dev), torch.ones(batch, device=dev)
    if what == "forward":
        def fn():
            with torch.no_grad(), autocast(dev, dtype):
                D(x, sigma)
    else:
        net.train().set_activation_checkpointing(checkpointing)

        def fn():
            with autocast(dev, dtype):
                loss = D(x, sigma).float().square().mean()
            loss.backward()
    return {"benchmark": "profile", "what": what, "preset": preset, "shape": list(x.shape), "batch": batch,
            "dtype": dtype, "checkpointing": checkpointing, "extrapolated": False,
            **profile_summary(fn, dev)} | environment(dev)
