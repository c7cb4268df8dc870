"""The training loop: exact resume, fault tolerance, DDP equivalence, the Cls-Free condition dropout."""
import math
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import freeecho_core.train as training
from freeecho_core.data.clips import ClipConfig
from freeecho_core.checkpoint import load_checkpoint, unet_from_payload
from freeecho_core.data.dataset import dataset_fingerprint
from freeecho_core.data.make_dataset import make_phantom_dataset
from freeecho_core.data.phantom import PhantomConfig
from freeecho_core.train import NonFiniteLoss, TrainConfig, ema_decay, learning_rate, read_log, train

CONFIG = TrainConfig(preset="tiny", frames=4, size=16, batch_size=4, steps=4, checkpoint_every=2, seed=3)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_phantom_dataset(tmp_path_factory.mktemp("d") / "camus", "camus", 6, 0,
                                PhantomConfig(height=32, frames=6), workers=2, progress=False)


def weights(run_dir: Path, key: str = "model") -> dict:
    return load_checkpoint(run_dir / "checkpoint.pt")[key]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_after_an_interrupt_gives_the_weights_of_a_straight_run(data_root, tmp_path, monkeypatch):
    """Interrupted inside the learning-rate cool-down: the resumed optimizer takes the schedule's rate."""
    config = replace(CONFIG, lr_cooldown=3)
    train(config, data_root, tmp_path / "straight", progress=False)
    real_step = training.optimizer_step

    def interrupt_at_step_3(*args, **kwargs):
        if args[6] == 2:  # step index 2: two steps done
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "optimizer_step", interrupt_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(config, data_root, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(training, "optimizer_step", real_step)
    train(config, data_root, tmp_path / "resumed", resume=True, progress=False)
    for key in ("model", "ema"):
        assert_same_weights(weights(tmp_path / "straight", key), weights(tmp_path / "resumed", key))
    log = read_log(tmp_path / "resumed" / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4] and all(math.isfinite(v) for v in log["loss"])
    ema = unet_from_payload(load_checkpoint(tmp_path / "resumed" / "ema.pt"))
    assert_same_weights(ema.state_dict(), weights(tmp_path / "straight", "ema"))


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(data_root, tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(replace(CONFIG, steps=2), data_root, run, progress=False)

    def torn_write(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_write)
    with pytest.raises(OSError, match="disk full"):
        train(CONFIG, data_root, run, resume=True, progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "ema.pt", "log.csv"]


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    real_loss = training.micro_batch_loss
    calls = []

    def nan_from_the_third_step(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(training, "micro_batch_loss", nan_from_the_third_step)
    with pytest.raises(NonFiniteLoss, match="step 3: the loss is nan"):
        train(CONFIG, data_root, tmp_path / "run", progress=False)
    payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["step"] == 2 and all(torch.isfinite(v).all() for v in payload["model"].values())


def test_resume_refuses_other_settings_and_a_new_run_refuses_an_old_folder(data_root, tmp_path):
    train(replace(CONFIG, steps=2), data_root, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match=r"other \['size'\]"):
        train(replace(CONFIG, size=32), data_root, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        train(CONFIG, data_root, tmp_path / "run", progress=False)


def test_checkpoints_record_the_frame_rate_the_clips_play_at(data_root, tmp_path):
    """Consecutive frames keep the recordings' rate (the phantom's, from Info_<view>.cfg); clip_fps resamples
    every recording to one rate, which is what the model learns as real time and what generate writes."""
    train(replace(CONFIG, steps=1), data_root, tmp_path / "native", progress=False)
    native = load_checkpoint(tmp_path / "native" / "ema.pt")["data"]["fps"]
    assert native > 0 and native != pytest.approx(25.0)
    train(replace(CONFIG, steps=1, clip_fps=25.0), data_root, tmp_path / "fixed", progress=False)
    assert load_checkpoint(tmp_path / "fixed" / "ema.pt")["data"]["fps"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match=r"other \['clip_fps'\]"):
        train(replace(CONFIG, steps=2), data_root, tmp_path / "fixed", resume=True, progress=False)


def test_gradient_accumulation_matches_the_full_batch(data_root, tmp_path):
    train(CONFIG, data_root, tmp_path / "full", progress=False)
    train(replace(CONFIG, grad_accum=2), data_root, tmp_path / "accum", progress=False)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "accum")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def _ddp_worker(rank, world_size, init_file, data_root, run_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        train(CONFIG, data_root, run_dir, rank=rank, world_size=world_size, progress=False)
    finally:
        dist.destroy_process_group()


def test_two_ddp_processes_give_the_weights_of_one_process(data_root, tmp_path):
    torch.set_num_threads(1)
    train(CONFIG, data_root, tmp_path / "single", progress=False)
    init_file = Path(tempfile.mkdtemp()) / "rendezvous"
    mp.spawn(_ddp_worker, args=(2, str(init_file), str(data_root), str(tmp_path / "ddp")), nprocs=2, join=True)
    a, b = weights(tmp_path / "single"), weights(tmp_path / "ddp")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not all(torch.equal(a[k], load_checkpoint(tmp_path / "single" / "ema.pt")["model"][k]) for k in a)


def test_clsfree_drops_the_condition_with_probability_p_uncond(data_root, tmp_path):
    config = replace(CONFIG, kind="clsfree")
    model = training.build_model(config)
    assert model.config.cond_channels == 5
    torch.nn.init.normal_(model.final_conv.weight, std=0.1)
    denoiser = training.EDMPrecond(model)
    batch = next(iter(torch.utils.data.DataLoader(training.EchoClips(data_root, "TRAIN", ClipConfig(4, 16)),
                                                  batch_size=2)))
    gens = lambda: training.sample_generators(0, [0, 1], "cpu")  # noqa: E731
    with torch.no_grad():
        dropped = training.micro_batch_loss(denoiser, batch, gens(), replace(config, p_uncond=1.0), "cpu")
        kept = training.micro_batch_loss(denoiser, batch, gens(), replace(config, p_uncond=0.0), "cpu")
        null = training.edm_loss(denoiser, batch["video"], torch.zeros(2, 5, 16, 16), generator=gens()).mean()
    assert torch.allclose(dropped, null) and not torch.allclose(kept, null)
    train(replace(config, steps=2), data_root, tmp_path / "clsfree", progress=False)
    assert load_checkpoint(tmp_path / "clsfree" / "ema.pt")["config"]["cond_channels"] == 5


def test_ema_warm_up_forgets_the_initial_weights_in_runs_of_any_length():
    """EDM's ramp-up: the half-life is ema_rampup x the images seen, capped at ema_halflife. The weight the
    EMA still gives the initial network after a run is the product of the per-step decays."""
    paper = TrainConfig()
    assert ema_decay(paper, 10**9) == pytest.approx(0.995, abs=1e-4)  # the authors' decay once warmed up
    assert ema_decay(paper, 16) == pytest.approx(0.5 ** (16 / (16 * 0.05)))  # first step: ~1e-6
    for config, steps in ((TrainConfig(batch_size=4, ema_rampup=0.1), 30),
                          (TrainConfig(batch_size=4, ema_halflife=2000.0, ema_rampup=0.1), 3600), (paper, 100_000)):
        betas = np.array([ema_decay(config, (k + 1) * config.batch_size) for k in range(steps)])
        assert np.all(np.diff(betas) >= 0) and betas.prod() < 1e-2, (config, steps)
    no_rampup = [0.995] * 30  # the old fixed decay: a smoke run's EMA kept 86 % of its initial weights
    assert np.prod(no_rampup) > 0.85


def test_the_cool_down_decays_the_learning_rate_linearly_over_the_last_steps():
    config = TrainConfig(lr=1e-3, steps=10, lr_cooldown=4)
    rates = [learning_rate(config, step) for step in range(10)]
    assert rates[:6] == [1e-3] * 6
    assert rates[6:] == pytest.approx([0.8e-3, 0.6e-3, 0.4e-3, 0.2e-3])
    assert {learning_rate(TrainConfig(steps=10), step) for step in range(10)} == {1e-3}  # the paper: constant
    with pytest.raises(ValueError, match="lr_cooldown"):
        TrainConfig(lr_cooldown=-1)


def test_a_later_stage_continues_a_run_with_its_own_noise_levels_and_rate(data_root, tmp_path):
    """A stage such as params/cpu.yaml's train_high_noise resumes the run's checkpoint with other settings; its
    uniform share of noise levels changes the steps it trains (the same data, seeds and rate otherwise)."""
    train(CONFIG, data_root, tmp_path / "a", progress=False)
    train(CONFIG, data_root, tmp_path / "b", progress=False)
    later = replace(CONFIG, steps=6, lr=5e-4, lr_cooldown=2)
    train(replace(later, noise_uniform_share=0.5), data_root, tmp_path / "a", resume=True, progress=False)
    train(later, data_root, tmp_path / "b", resume=True, progress=False)
    a, b = read_log(tmp_path / "a" / "log.csv"), read_log(tmp_path / "b" / "log.csv")
    assert list(a["step"]) == list(range(1, 7)) and np.array_equal(a["loss"][:4], b["loss"][:4])
    assert not np.array_equal(a["loss"][4:], b["loss"][4:])
    assert load_checkpoint(tmp_path / "a" / "checkpoint.pt")["train_config"]["noise_uniform_share"] == 0.5
    with pytest.raises(ValueError, match="noise_uniform_share"):
        TrainConfig(noise_uniform_share=1.5)


def test_resume_continues_the_clock_removes_stale_temporaries_and_refuses_other_data(data_root, tmp_path):
    config = replace(CONFIG, steps=2, checkpoint_every=2)
    run = tmp_path / "run"
    train(config, data_root, run, progress=False)
    stale = run / ".checkpoint.pt.abc123.tmp"  # what a process killed while writing leaves
    stale.write_bytes(b"half a checkpoint")
    last = float((run / "log.csv").read_text().splitlines()[-1].split(",")[2])
    train(replace(config, steps=3), data_root, run, resume=True, progress=False)
    seconds = [float(line.split(",")[2]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert len(seconds) == 3 and seconds == sorted(seconds) and seconds[2] > last
    assert not stale.exists()
    assert load_checkpoint(run / "ema.pt")["data"]["fingerprint"] == dataset_fingerprint(data_root)
    other = make_phantom_dataset(tmp_path / "other", "camus", 3, 5, PhantomConfig(height=32, frames=6),
                                 workers=1, progress=False)
    with pytest.raises(ValueError, match="other_data|--other-data"):
        train(replace(config, steps=4), other, run, resume=True, progress=False)
    train(replace(config, steps=4), other, run, resume=True, progress=False, other_data=True)
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4


def test_a_run_that_fails_before_its_first_step_writes_no_log(data_root, tmp_path, monkeypatch):
    def broken_step(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(training, "optimizer_step", broken_step)
    with pytest.raises(RuntimeError):
        train(CONFIG, data_root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "log.csv").exists()


def test_a_rendered_phantom_keeps_its_fingerprint_and_another_does_not(tmp_path):
    config = PhantomConfig(height=32, frames=4)
    one, two, other = (make_phantom_dataset(tmp_path / name, "echonet", 3, seed, config, workers=1, progress=False)
                       for name, seed in (("one", 0), ("two", 0), ("other", 1)))
    assert dataset_fingerprint(one) == dataset_fingerprint(two) != dataset_fingerprint(other)


def test_checkpoints_record_the_code_version_the_run_started_with(data_root, tmp_path, monkeypatch):
    versions = iter(range(100))
    monkeypatch.setattr(training, "code_version", lambda: {"commit": f"c{next(versions)}"})
    train(replace(CONFIG, steps=4, checkpoint_every=2), data_root, tmp_path / "run", progress=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["code_version"] == {"commit": "c0"}
    assert load_checkpoint(tmp_path / "run" / "ema.pt")["code_version"] == {"commit": "c0"}
