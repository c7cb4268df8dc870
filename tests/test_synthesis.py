"""The synthesis API (`synthesis.FreeEcho`) and the methods it shares with the study: the pseudo-video start, the
three-line use, maps of other aspect ratios, the model's frame rate, and wrong model/method pairs."""
import cv2
import numpy as np
import pytest
import torch

from freeecho_core.checkpoint import DEFAULT_FPS, load_checkpoint, load_model
from freeecho_core.data.clips import ClipConfig
from freeecho_core.data.dataset import EchoClips
from freeecho_core.data.phantom import PhantomConfig, make_case
from freeecho_core.guidance import Guide
from freeecho_core.sampler import AUTHORS_CHURN, SamplerConfig
from freeecho_core.synthesis import FreeEcho, Method, generate, initial_videos

QUICK = SamplerConfig(solver="euler", churn=None)


@pytest.fixture(scope="module")
def camus_map():
    return make_case(0, 0, "4CH", PhantomConfig(height=64, frames=4)).labels[0].astype(np.int64)


def test_free_echo_starts_from_the_matched_pseudo_video(trained):
    data, unconditional, _ = trained
    model = load_model(unconditional).denoiser
    clips = EchoClips(data, "TEST", ClipConfig(4, 16))
    target = EchoClips(data, "TRAIN", ClipConfig(4, 16)).intensity_histogram()
    method = Method("free-echo@63", "free-echo", 62)
    init = initial_videos(method, clips.clip(0).ed_map, target, 4, [1, 2])
    out = generate(method, clips.clip(0).ed_map, [1, 2], {"unconditional": model}, target, 4, QUICK, "cpu")
    assert torch.allclose(out, init[:, 0], atol=0.02)  # two steps from sigma = 0.0025: barely changed


def test_three_lines_from_a_checkpoint_to_videos(trained, camus_map, tmp_path):
    _, unconditional, _ = trained
    pipe = FreeEcho.from_checkpoint(unconditional)
    out = pipe(camus_map, samples=2, start_step=63, sampler=QUICK)
    assert out.square.shape == (2, 4, 16, 16) and out.videos.dtype == np.uint8 and out.seeds == [0, 1]
    assert out.convention == "camus" and out.method.name == "free-echo@63"
    # t_i = 63 keeps the pseudo video: myocardium (grey 1.0 in the pseudo image) brighter than the cavity
    assert out.square[:, 0][:, out.ed_map == 3].mean() > out.square[:, 0][:, out.ed_map == 2].mean() + 50
    cv2.imwrite(str(tmp_path / "ed.png"), camus_map.astype(np.uint8))
    assert np.array_equal(pipe(tmp_path / "ed.png", samples=2, start_step=63, sampler=QUICK).videos, out.videos)
    assert pipe.fps == load_checkpoint(unconditional)["data"]["fps"] > 0  # the training clips' frame rate


def test_a_guide_makes_free_echo_a_guided_method(trained, camus_map):
    """guide= turns Free-Echo into its guided kind; a guided kind alone takes its guide's defaults; the ILVR run
    to the end keeps the pseudo video's low band closer than the plain run from the same noise."""
    pipe = FreeEcho.from_checkpoint(trained[1])
    out = pipe(camus_map, samples=1, start_step=30, sampler=QUICK, guide=Guide(factor=2, until=64, calibration=0))
    assert out.method == Method("free-echo-ilvr@30", "free-echo-ilvr", 30, Guide(factor=2, until=64, calibration=0))
    init = torch.nn.functional.avg_pool2d(initial_videos(Method("f", "free-echo", 30), out.ed_map, pipe.target, 4,
                                                         [0])[0, 0], 2)
    plain = pipe(camus_map, samples=1, start_step=30, sampler=QUICK)
    errors = [(torch.nn.functional.avg_pool2d(torch.from_numpy(v.square[0]).float() / 127.5 - 1, 2) - init).abs().mean()
              for v in (out, plain)]
    assert errors[0] < errors[1] / 2
    assert pipe(camus_map, samples=1, start_step=30, sampler=QUICK, method="free-echo-nc").method.guide == \
        Guide(ilvr=False, calibration=2)
    with pytest.raises(ValueError, match="a guide guides the free-echo method, not 'sdedit'"):
        pipe(camus_map, samples=1, method="sdedit", guide=Guide())
    with pytest.raises(ValueError, match="method 'free-echo' needs no guide"):
        Method("free-echo@15", "free-echo", 15, Guide())


@pytest.mark.parametrize("shape", [(64, 39), (52, 64)])
def test_videos_are_cropped_back_to_the_maps_aspect(trained, camus_map, shape):
    _, unconditional, _ = trained
    H, W = shape
    labels = camus_map[:H, 39 - W // 2 : 39 - W // 2 + W]  # the 64 x 78 map cut around its centre
    out = FreeEcho.from_checkpoint(unconditional)(labels, samples=1, start_step=63, sampler=QUICK)
    S = 16
    assert out.videos.shape == (1, 4, round(S * H / max(H, W)), round(S * W / max(H, W)))


def test_models_sample_only_their_own_methods(trained, camus_map, tmp_path):
    _, unconditional, clsfree = trained
    guided = FreeEcho.from_checkpoint(clsfree)
    assert guided.conditional and guided(camus_map, samples=1, sampler=QUICK).method.kind == "clsfree"
    with pytest.raises(ValueError, match="conditional .Cls-Free. model; it cannot sample 'free-echo'"):
        guided(camus_map, samples=1, method="free-echo")
    with pytest.raises(ValueError, match="an unconditional model; it cannot sample 'clsfree'"):
        FreeEcho.from_checkpoint(unconditional)(camus_map, samples=1, method="clsfree")
    with pytest.raises(ValueError, match="samples must be at least 1"):
        FreeEcho.from_checkpoint(unconditional)(camus_map, samples=0)
    with pytest.raises(ValueError, match="start step t_i must be in 0..63"):
        FreeEcho.from_checkpoint(unconditional)(camus_map, samples=1, start_step=64)
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        FreeEcho.from_checkpoint(tmp_path / "none.pt")


def test_checkpoints_without_a_frame_rate_play_at_the_default(trained, tmp_path):
    _, unconditional, _ = trained
    payload = load_checkpoint(unconditional)
    payload.pop("data")
    torch.save(payload, tmp_path / "old.pt")
    assert FreeEcho.from_checkpoint(tmp_path / "old.pt").fps == DEFAULT_FPS


@pytest.mark.parametrize("solver, steps, nfe", [("euler", 6, 6), ("heun", 6, 11), ("dpmpp2m", 6, 6),
                                                ("euler", None, None)])
def test_sampler_steps_set_the_network_evaluations_of_both_kinds_of_model(trained, camus_map, solver, steps, nfe):
    _, unconditional, clsfree = trained
    sampler = SamplerConfig(solver=solver, churn=None, steps=steps)
    for path, start_step, default_nfe in ((unconditional, 15, 64 - 15), (clsfree, 0, 64)):
        pipe = FreeEcho.from_checkpoint(path)
        calls = []
        pipe.denoiser.register_forward_hook(lambda *_: calls.append(1))
        out = pipe(camus_map, samples=1, start_step=start_step, sampler=sampler)
        assert len(calls) == (nfe or default_nfe) and out.square.shape == (1, 4, 16, 16)


def test_sampler_settings_are_checked_when_made():
    with pytest.raises(ValueError, match="dpmpp2m solver integrates the deterministic ODE only"):
        SamplerConfig(solver="dpmpp2m", churn=AUTHORS_CHURN)
    with pytest.raises(ValueError, match="sampler steps must be at least 2, got 1"):
        SamplerConfig(steps=1)
    with pytest.raises(ValueError, match="solver must be one of"):
        SamplerConfig(solver="rk4")
