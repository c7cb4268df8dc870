"""The benchmark command and its records (speed itself is measured by `freeecho bench`, never asserted here),
and the equivalence of the network optimisations that the benchmarks motivated."""
import json
import math

import pytest
import torch

from freeecho_core.bench.network import activation_memory
from freeecho_core.bench.report import results_table, target_rows
from freeecho_core.bench.sampling import add_ratios, extrapolate_sampling
from freeecho_core.bench.suites import run_suite
from freeecho_core.cli import main
from freeecho_core.unet3d import SpatialLinearAttention, TemporalAttention, UNet3D, pointwise, unet3d_config
from freeecho_core.viz import rows_table

TIMED_FIELDS = {"benchmark", "device", "dtype", "batch", "shape", "repeats", "seconds_median", "seconds_min",
                "throughput", "throughput_unit", "extrapolated", "torch", "code_version"}
KINDS = {"suite", "forward", "sampling", "forward_variant", "op", "activation_memory", "training", "ot",
         "phantom", "profile"}
TINY_GPU_SUITE = dict(preset="tiny", frames=2, size=8, batches=(1, 2), forward_repeats=1, variant_frames=2,
                      variant_size=8, variant_batch=1, train_batch=2, train_measured_batch=2, train_frames=2,
                      train_size=8, train_repeats=1, ot_bins=(16,), phantom_sizes=((2, 16),))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The CI smoke benchmark, through the command line (seconds)."""
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    assert main(["bench", "--suite", "smoke", "--out", str(out)]) == 0
    return out, json.loads(out.read_text())


def test_smoke_suite_runs_every_benchmark_kind_and_records_its_context(smoke):
    _, records = smoke
    assert {r["benchmark"] for r in records} == KINDS
    for r in records:
        if r["benchmark"] not in ("suite", "profile", "activation_memory"):
            assert TIMED_FIELDS <= set(r), r["benchmark"]
            assert r["seconds_median"] > 0 and "commit" in r["code_version"] and r["suite"] == "smoke"
    nfe = {r["mode"]: r["nfe"] for r in records if r["benchmark"] == "sampling"}
    assert nfe == {"ours": 97, "reference": 127}  # t_i = 15 vs the authors' full stochastic run


def test_smoke_sampling_carries_the_ratio_to_the_reference_mode(smoke):
    _, records = smoke
    sampling = {(r["mode"], r["batch"]): r for r in records if r["benchmark"] == "sampling"}
    for batch in (1, 2):
        ours, ref = sampling["ours", batch], sampling["reference", batch]
        assert ours["speedup_vs_reference"] == pytest.approx(ref["seconds_per_video"] / ours["seconds_per_video"])
        assert ours["ratio_to_floor"] is None  # the bandwidth floor is an H100 figure
        assert not ours["extrapolated"] and ref["shape"][1] == 3 and ref["dtype"] == "float32"


def test_results_table_reads_stored_suites(smoke):
    path, records = smoke
    rows = results_table([path])
    timed = [r for r in records if r["benchmark"] not in ("suite", "profile", "activation_memory")]
    assert len(rows) == len(timed)
    ours = next(r for r in rows if r["benchmark"] == "sampling" and r["mode"] == "ours")
    assert ours["speedup_vs_reference"] > 0 and "97 NFE" in ours["what"] and ours["commit"]
    extrapolated = [r for r in rows if r["extrapolated"]]
    assert [r["benchmark"] for r in extrapolated] == ["training"]  # batch 4 from the measured batch 2
    table = rows_table(rows, ["benchmark", "what", "seconds", "extrapolated", "ratio_to_floor"])
    assert len(table.splitlines()) == len(rows) + 2 and "| - |" in table


def test_gpu_suite_code_path_runs_at_tiny_sizes_on_the_cpu(tmp_path):
    records = run_suite("gpu", device="cpu", out=tmp_path / "gpu.json", log=lambda line: None, **TINY_GPU_SUITE)
    assert json.loads((tmp_path / "gpu.json").read_text()) == json.loads(json.dumps(records))
    sampling = [r for r in records if r["benchmark"] == "sampling"]
    assert len(sampling) == 2 * 2 + 2 and not any(r["extrapolated"] for r in sampling)  # measured, not estimated
    assert {r["dtype"] for r in sampling if r["mode"] == "ours"} == {"bfloat16", "float32"}
    training = [r for r in records if r["benchmark"] == "training"]
    assert sorted(r["checkpointing"] for r in training) == [False, True]
    assert all(r["peak_memory_gb"] is None for r in training)  # CUDA only


def test_cpu_suite_extrapolates_sampling_from_the_measured_evaluation():
    forward = {"mode": "ours", "preset": "paper", "batch": 1, "shape": [1, 1, 24, 128, 128], "dtype": "float32",
               "seconds_median": 2.0, "seconds_min": 1.5, "repeats": 2, "warmup": 1, "device": "x CPU"}
    r = extrapolate_sampling(forward, 97, 0.5, 15)
    assert r["extrapolated"] and r["seconds_per_video"] == 97 * 2.0 + 0.5 and r["seconds_min"] == 97 * 1.5 + 0.5
    assert r["throughput"] == pytest.approx(1 / 194.5) and "97 x" in r["extrapolated_from"]


def test_ratios_to_the_reference_and_to_the_h100_floor():
    def rec(mode, batch, seconds):
        return {"benchmark": "sampling", "mode": mode, "batch": batch, "shape": [batch, 1, 24, 128, 128],
                "start_step": 15, "seconds_per_video": seconds, "device": "NVIDIA H100 80GB HBM3"}

    records = [rec("ours", 8, 0.5), rec("reference", 8, 3.0), rec("ours", 1, 1.0)]
    add_ratios(records)
    assert records[0]["speedup_vs_reference"] == pytest.approx(6.0)
    assert records[0]["ratio_to_floor"] == pytest.approx(0.5 / 0.43)
    assert records[2]["speedup_vs_reference"] is None  # no reference at batch 1


def test_activation_checkpointing_cuts_the_estimated_memory():
    m = activation_memory("tiny", batch=2, frames=4, size=16)
    assert 0 < m["largest_block_gb"] < m["with_checkpointing_gb"] < m["without_checkpointing_gb"]


def test_suite_errors_are_clear():
    with pytest.raises(ValueError, match="unknown suite"):
        run_suite("huge")
    with pytest.raises(ValueError, match="float32"):
        run_suite("smoke", dtypes=("float16",), log=lambda line: None)


# ----------------------------------------------------------------------------- the optimised network equals the plain maths

def test_pointwise_is_a_1x1_convolution():
    torch.manual_seed(0)
    for bias in (True, False):
        conv = torch.nn.Conv2d(8, 24, 1, bias=bias)
        x = torch.randn(3, 8, 5, 7)
        assert torch.allclose(pointwise(conv, x.flatten(2)), conv(x).flatten(2), atol=1e-6)


def test_temporal_attention_equals_softmax_attention_with_the_relative_bias():
    """The fused SDPA kernel (4-D mask) gives softmax(q k^T / sqrt(d) + bias) v within 1e-5."""
    torch.manual_seed(0)
    attn = TemporalAttention(dim=16, heads=2, dim_head=8, max_rel_distance=3).eval()
    torch.nn.init.normal_(attn.rel_bias.weight)
    x = torch.randn(2, 16, 7, 3, 4)
    B, C, T, H, W = x.shape
    tokens = attn.norm(x).permute(0, 3, 4, 2, 1).reshape(B * H * W, T, C)
    q, k, v = attn.to_qkv(tokens).reshape(B * H * W, T, 3, 2, 8).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-1, -2) / math.sqrt(8) + attn.position_bias(T, "cpu")).softmax(-1)
    out = attn.to_out((weights @ v).transpose(1, 2).reshape(B * H * W, T, -1))
    expected = x + out.reshape(B, H, W, T, C).permute(0, 4, 3, 1, 2)
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_linear_attention_equals_its_convolution_form():
    torch.manual_seed(0)
    attn = SpatialLinearAttention(dim=16, heads=2, dim_head=8).eval()
    x = torch.randn(2, 16, 3, 4, 6)
    B, C, T, H, W = x.shape
    frames = attn.norm(x).transpose(1, 2).reshape(B * T, C, H, W)
    q, k, v = attn.to_qkv(frames).reshape(B * T, 3, 2, -1, H * W).unbind(1)
    q, k = q.softmax(dim=-2) * attn.scale, k.softmax(dim=-1)
    out = torch.einsum("bhde,bhdn->bhen", torch.einsum("bhdn,bhen->bhde", k, v), q).reshape(B * T, -1, H, W)
    expected = x + attn.to_out(out).reshape(B, T, C, H, W).transpose(1, 2)
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


def test_activation_checkpointing_keeps_outputs_and_gradients():
    torch.manual_seed(0)
    net = UNet3D(unet3d_config("tiny"))
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    x, c_noise = torch.randn(2, 1, 3, 8, 8), torch.tensor([0.1, -0.3])
    grads = []
    for enabled in (False, True):
        net.zero_grad()
        y = net.set_activation_checkpointing(enabled)(x, c_noise)
        y.square().sum().backward()
        grads.append((y.detach(), [p.grad.clone() for p in net.parameters()]))
    (y0, g0), (y1, g1) = grads
    assert torch.equal(y0, y1) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g0, g1))
    assert any(g.abs().sum() > 0 for g in g1)
    with torch.no_grad():  # no recomputation without gradients
        assert torch.allclose(net(x, c_noise), y0, atol=1e-6)


def test_bench_forward_still_accepts_the_plain_evaluation_options():
    from freeecho_core.bench.network import bench_forward

    r = bench_forward("tiny", frames=2, size=8, repeats=1, channels=3, dtype="bfloat16", channels_last=True)
    assert r["mode"] == "reference" and r["shape"] == [1, 3, 2, 8, 8] and r["channels_last"]
    assert r["gflop_per_video"] > 0 and r["seconds_per_video"] == r["seconds_median"]
    with pytest.raises(ValueError, match="multiples of 2"):
        bench_forward("tiny", size=9)


def test_targets_read_only_measured_paper_size_records():
    def sampling(batch, seconds, speedup, extrapolated=False):
        return {"benchmark": "sampling", "mode": "ours", "preset": "paper", "batch": batch, "start_step": 15,
                "shape": [batch, 1, 24, 128, 128], "seconds_per_video": seconds, "speedup_vs_reference": speedup,
                "extrapolated": extrapolated}

    def training(throughput, memory):
        return {"benchmark": "training", "preset": "paper", "batch": 16, "shape": [16, 1, 24, 128, 128],
                "throughput": throughput, "peak_memory_gb": memory, "extrapolated": False}

    records = [sampling(8, 0.7, 4.0), sampling(8, 0.5, 6.0), sampling(8, 0.1, 50.0, extrapolated=True),
               sampling(1, 0.05, 9.0), training(2.5, 75.0), training(1.5, 40.0),
               {"benchmark": "training", "preset": "paper", "batch": 16, "shape": [16, 1, 24, 128, 128],
                "error": "out of memory"}]
    rows = target_rows(records)
    assert [r["reached"] for r in rows] == [0.5, 6.0, 2.5, 75.0]  # the fastest training run sets both figures
    assert [r["met"] for r in rows] == [True, True, True, False]
    cpu_only = [sampling(8, 0.5, 6.0, extrapolated=True)]
    assert all(r["reached"] is None and r["met"] is None for r in target_rows(cpu_only))


def test_network_variants_record_their_deviation_from_float32(smoke):
    _, records = smoke
    variants = [r for r in records if r["benchmark"] == "forward_variant"]
    exact = [r["max_abs_diff"] for r in variants if r["dtype"] == "float32"]
    bf16 = [r["max_abs_diff"] for r in variants if r["dtype"] == "bfloat16"]
    assert len(exact) == 3 and max(exact) < 1e-5  # layout and batching change nothing but rounding
    assert len(bf16) == 2 and 0 < min(bf16) and max(bf16) < 2 / 255  # bf16: below one grey level of 255


def test_cpu_training_suite_times_eager_compiled_threads_and_bf16(tmp_path):
    """The cpu-training suite's code path at a tiny size: every configuration gives one record with its
    thread count, dtype and (compiled) first-step time, and the thread count is restored."""
    import torch

    from freeecho_core.bench.training import cpu_training_suite

    threads = torch.get_num_threads()
    tiny = [(2, 8, 2, False, 1, "float32"), (2, 8, 2, False, 1, "bfloat16")]
    records = cpu_training_suite(preset="tiny", repeats=1, configurations=tiny, out=tmp_path / "t.json",
                                 log=lambda line: None)
    assert [r["dtype"] for r in records] == ["float32", "bfloat16"] and all(r["threads"] == 1 for r in records)
    assert all(r["throughput_unit"] == "it/s" and r["seconds_median"] > 0 for r in records)
    assert torch.get_num_threads() == threads and (tmp_path / "t.json").is_file()


def test_cpu_sampling_suite_times_a_stored_model_and_the_reference_mode(trained, tmp_path):
    """The cpu-sampling suite on a tiny trained model: each setting's measured evaluations, the variants'
    deviations from the eager float32 videos of the same seeds, and the ratio to the authors' cost profile."""
    from freeecho_core.bench.sampling import cpu_sampling_suite
    from freeecho_core.synthesis import EXAMPLE_MAP

    _, unconditional, _ = trained
    records = cpu_sampling_suite(unconditional, EXAMPLE_MAP, batch=2, out=tmp_path / "s.json", log=lambda line: None)
    videos = [r for r in records if r["benchmark"] == "video"]
    assert [r["nfe"] for r in videos[:2]] == [97, 49]  # the paper's Heun and the Euler steps, from t_i = 15
    assert [(r["batch"], r["dtype"], r["compiled"]) for r in videos[2:]] == [
        (1, "float32", False), (1, "float32", True), (2, "float32", False), (2, "float32", True), (1, "bfloat16", False)]
    assert all("max_abs_diff_grey" not in r for r in videos[:3])
    compiled, batched = videos[3], videos[4]
    assert compiled["max_abs_diff_grey"] <= 2 and batched["max_abs_diff_grey"] <= 2  # the same videos
    assert compiled["warmup_seconds"] > 0 and all(r["preset"] == "tiny" for r in videos)
    reference = records[-1]
    assert (reference["mode"], reference["nfe"], reference["shape"][1]) == ("reference", 127, 3)
    for r in videos:
        assert r["speedup_vs_reference"] == pytest.approx(reference["seconds_per_video"] / r["seconds_per_video"])
    assert json.loads((tmp_path / "s.json").read_text()) == records


def test_stored_suites_are_the_json_lists_of_records_and_nothing_else(tmp_path):
    from freeecho_core.bench.report import stored_suites

    (tmp_path / "cpu.json").write_text(json.dumps([{"benchmark": "suite"}]))
    (tmp_path / "nfe-quality.json").write_text(json.dumps({"rows": []}))  # a study, not a timing run
    assert stored_suites(tmp_path) == {"cpu": [{"benchmark": "suite"}]}
