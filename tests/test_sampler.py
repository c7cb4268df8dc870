import math

import pytest
import torch

from freeecho_core.cli import main
from freeecho_core.edm import EDMPrecond, karras_sigmas
from freeecho_core.sampler import (DEFAULT_SAMPLER, PAPER_SAMPLER, SamplerConfig, cfg_denoiser, dpmpp_2m_sample,
                                   euler_sample, heun_sample, randn_per_sample, reference_sdedit_sample, sdedit_sample,
                                   seeded_generators, start_schedule)
from freeecho_core.unet3d import UNet3D, unet3d_config

SIGMAS = karras_sigmas()
AUTHORS_CHURN = dict(S_churn=80.0, S_tmin=0.05, S_tmax=50.0, S_noise=1.0)


def exact_ode_solution(x_start, sigma_start, mu, s):
    """The probability-flow ODE of Gaussian data maps x at sigma_start to mu + (x - mu) s / sqrt(s^2 + sigma^2)."""
    return mu + (x_start - mu) * s / math.sqrt(s**2 + sigma_start**2)


def test_deterministic_heun_from_pure_noise_follows_the_exact_ode(gaussian):
    g = torch.Generator().manual_seed(0)
    x_T = SIGMAS[0] * torch.randn(1, 1, 4, 64, 64, generator=g, dtype=torch.float64)
    x_0 = heun_sample(gaussian, x_T, SIGMAS)
    expected = exact_ode_solution(x_T, SIGMAS[0].item(), gaussian.mu, gaussian.s)
    assert torch.allclose(x_0, expected, atol=1e-2)
    assert x_0.mean().item() == pytest.approx(gaussian.mu, abs=0.01)
    assert x_0.std().item() == pytest.approx(gaussian.s, abs=0.01)


@pytest.mark.parametrize("start_step", [0, 15, 35, 55])
def test_sdedit_matches_the_closed_form_sample_by_sample(gaussian, start_step):
    init = torch.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=torch.float64).reshape(2, 1, 3, 8, 8)
    out = sdedit_sample(gaussian, init, SIGMAS, start_step, generator=torch.Generator().manual_seed(7))
    n = torch.randn(init.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sigma_k = SIGMAS[start_step].item()
    expected = exact_ode_solution(init + sigma_k * n, sigma_k, gaussian.mu, gaussian.s)
    assert torch.allclose(out, expected, atol=1e-2)


def test_sdedit_evaluates_the_network_only_from_the_start_step(gaussian):
    init = torch.zeros(1, 1, 2, 4, 4)
    sdedit_sample(gaussian, init, SIGMAS, 15, generator=torch.Generator().manual_seed(0), **AUTHORS_CHURN)
    assert gaussian.calls == 97  # book/design.md, section 1: 97 evaluations from t_i = 15
    gaussian.calls = 0
    sdedit_sample(gaussian, init, SIGMAS, 15, solver="euler")
    assert gaussian.calls == 49


def test_heun_and_euler_evaluation_counts_on_the_full_schedule(gaussian):
    x = SIGMAS[0] * torch.randn(1, 1, 2, 4, 4)
    heun_sample(gaussian, x, SIGMAS, generator=torch.Generator().manual_seed(0), **AUTHORS_CHURN)
    assert gaussian.calls == 127  # 64 steps, no correction on the last one
    gaussian.calls = 0
    euler_sample(gaussian, x, SIGMAS)
    assert gaussian.calls == 64


@pytest.mark.parametrize("solver, order", [(heun_sample, 2), (euler_sample, 1), (dpmpp_2m_sample, 2)])
def test_solvers_converge_at_their_order(gaussian, solver, order):
    x_T = SIGMAS[0] * torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(13, 1, 1, 1, 1)
    expected = exact_ode_solution(x_T, SIGMAS[0].item(), gaussian.mu, gaussian.s)
    err = [(solver(gaussian, x_T, karras_sigmas(n)) - expected).abs().max().item() for n in (64, 256)]
    assert err[0] / err[1] == pytest.approx(4**order, rel=0.25)  # 4x the steps: error / 4^order


def test_stochastic_heun_samples_the_data_distribution(gaussian):
    g = torch.Generator().manual_seed(4)
    x_T = SIGMAS[0] * torch.randn(1, 1, 4, 64, 64, generator=g, dtype=torch.float64)
    x_0 = heun_sample(gaussian, x_T, SIGMAS, generator=g, **AUTHORS_CHURN)
    deterministic = heun_sample(gaussian, x_T, SIGMAS)
    assert not torch.allclose(x_0, deterministic, atol=1e-3)  # churn really injected noise
    assert x_0.mean().item() == pytest.approx(gaussian.mu, abs=0.01)
    assert x_0.std().item() == pytest.approx(gaussian.s, abs=0.01)


def test_a_sample_does_not_depend_on_its_batch(gaussian):
    seeds = [11, 12, 13]
    init = torch.rand(3, 1, 2, 8, 8)
    batch = sdedit_sample(gaussian, init, SIGMAS, 20, generator=seeded_generators(seeds), **AUTHORS_CHURN)
    alone = sdedit_sample(gaussian, init[1:2], SIGMAS, 20, generator=seeded_generators(seeds[1:2]), **AUTHORS_CHURN)
    assert torch.equal(batch[1:2], alone)


def test_a_unet_sample_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    net = UNet3D(unet3d_config("tiny"))
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    D = EDMPrecond(net).eval()
    init, seeds = torch.rand(2, 1, 3, 8, 8) * 2 - 1, [5, 6]
    with torch.no_grad():
        batch = sdedit_sample(D, init, karras_sigmas(8), 3, generator=seeded_generators(seeds))
        alone = sdedit_sample(D, init[:1], karras_sigmas(8), 3, generator=seeded_generators(seeds[:1]))
    assert torch.allclose(batch[:1], alone, atol=1e-5)
    assert not torch.allclose(batch[0], batch[1], atol=1e-2)


def test_per_sample_noise_needs_one_generator_per_sample():
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn_per_sample((3, 4), seeded_generators([1, 2]))


def test_sdedit_rejects_bad_start_step_and_solver(gaussian):
    with pytest.raises(ValueError, match="start_step"):
        sdedit_sample(gaussian, torch.zeros(1, 1, 1, 2, 2), SIGMAS, 64)
    with pytest.raises(ValueError, match="unknown solver"):
        sdedit_sample(gaussian, torch.zeros(1, 1, 1, 2, 2), SIGMAS, 10, solver="rk4")


@pytest.fixture
def conditional_denoiser():
    torch.manual_seed(0)
    net = UNet3D(unet3d_config("tiny", cond_channels=3))
    torch.nn.init.normal_(net.final_conv.weight, std=0.1)
    return EDMPrecond(net).eval()


def test_guidance_weight_one_is_the_conditional_model_and_zero_the_unconditional(conditional_denoiser):
    D = conditional_denoiser
    x, sigma = torch.randn(2, 1, 2, 8, 8), torch.tensor([0.7, 3.0])
    cond = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 8, 8)), 3).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        D_c, D_u = D(x, sigma, cond), D(x, sigma, torch.zeros_like(cond))
        assert not torch.allclose(D_c, D_u, atol=1e-4)
        assert torch.allclose(cfg_denoiser(D, cond, 1.0)(x, sigma), D_c, atol=1e-5)
        assert torch.allclose(cfg_denoiser(D, cond, 0.0)(x, sigma), D_u, atol=1e-5)
        assert torch.allclose(cfg_denoiser(D, cond, 7.0)(x, sigma), D_u + 7 * (D_c - D_u), atol=1e-4)


class RecordingDenoiser:
    """The Gaussian denoiser that records the (x, sigma) of every call."""

    def __init__(self, gaussian):
        self.D, self.calls = gaussian, []

    def __call__(self, x, sigma):
        self.calls.append((x.clone(), float(sigma)))
        return self.D(x, sigma)


@pytest.mark.parametrize("start_step", [0, 5, 15, 35, 55, 63])
def test_reference_mode_always_costs_127_network_evaluations(gaussian, start_step):
    init = torch.zeros(1, 1, 2, 4, 4)
    reference_sdedit_sample(gaussian, init, SIGMAS, start_step, generator=torch.Generator().manual_seed(0))
    assert gaussian.calls == 127
    gaussian.calls = 0
    sdedit_sample(gaussian, init, SIGMAS, start_step, generator=torch.Generator().manual_seed(0),
                  S_churn=80.0, S_tmin=0.05, S_tmax=50.0)
    assert gaussian.calls == 2 * (64 - start_step) - 1  # the clean method: 97 at t_i = 15


def test_reference_mode_overwrites_the_state_and_injects_only_the_churn(gaussian):
    init = torch.linspace(-1, 1, 4 * 32 * 32, dtype=torch.float64).reshape(1, 1, 4, 32, 32)
    D = RecordingDenoiser(gaussian)
    reference_sdedit_sample(D, init, SIGMAS, 15, generator=torch.Generator().manual_seed(3))
    x, sigma = D.calls[2 * 15]  # the first evaluation at step t_i = 15
    sigma_i = SIGMAS[15].item()
    assert sigma == pytest.approx(math.sqrt(2) * sigma_i)  # the network is told sqrt(2) sigma_i ...
    assert (x - init).std().item() == pytest.approx(1.003 * sigma_i, rel=0.03)  # ... but the noise is sigma_i
    assert D.calls[0][0].std().item() == pytest.approx(80.0, rel=0.03)  # the run began from pure noise


def test_reference_mode_adds_no_noise_above_S_tmax(gaussian):
    init = torch.rand(1, 1, 2, 8, 8, dtype=torch.float64)
    D = RecordingDenoiser(gaussian)
    reference_sdedit_sample(D, init, SIGMAS, 5, generator=torch.Generator().manual_seed(0))
    x, sigma = D.calls[2 * 5]
    assert SIGMAS[5] > 50 and sigma == SIGMAS[5].item()
    assert torch.equal(x, init)  # the noise-free pseudo video, at the level sigma_5 ~ 51


def test_reference_mode_result_does_not_depend_on_the_discarded_steps(gaussian):
    """The 2 t_i evaluations before t_i are wasted: garbage there leaves the video unchanged."""
    calls = []

    def garbage_first(x, sigma):
        calls.append(1)
        return torch.full_like(x, 1e3) if len(calls) <= 2 * 35 else gaussian(x, sigma)

    init = torch.rand(2, 1, 2, 8, 8, dtype=torch.float64)
    out = reference_sdedit_sample(gaussian, init, SIGMAS, 35, generator=seeded_generators([1, 2]))
    assert torch.equal(reference_sdedit_sample(garbage_first, init, SIGMAS, 35, generator=seeded_generators([1, 2])), out)
    with pytest.raises(ValueError, match="start_step"):
        reference_sdedit_sample(gaussian, init, SIGMAS, 64)


def test_reference_mode_without_churn_solves_the_ode_from_the_noise_free_pseudo_video(gaussian):
    init = torch.linspace(-1, 1, 2 * 4 * 8 * 8, dtype=torch.float64).reshape(2, 1, 4, 8, 8)
    out = reference_sdedit_sample(gaussian, init, SIGMAS, 35, S_churn=0.0, generator=torch.Generator().manual_seed(0))
    expected = exact_ode_solution(init, SIGMAS[35].item(), gaussian.mu, gaussian.s)
    assert torch.allclose(out, expected, atol=3e-3)  # Heun's discretisation error on 29 steps: ~1e-3
    noised = exact_ode_solution(init + SIGMAS[35] * torch.randn_like(init), SIGMAS[35].item(), gaussian.mu, gaussian.s)
    assert not torch.allclose(out, noised, atol=3e-2)  # sdedit_sample would have noised init to sigma_35


def test_dpmpp_2m_evaluates_once_per_step_and_its_first_step_is_euler(gaussian):
    x_T = SIGMAS[0] * torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(13, 1, 1, 1, 1)
    dpmpp_2m_sample(gaussian, x_T, SIGMAS)
    assert gaussian.calls == 64
    two = SIGMAS[[0, 1, -1]]  # one step then the last: the multistep term never enters
    assert torch.allclose(dpmpp_2m_sample(gaussian, x_T, two), euler_sample(gaussian, x_T, two), atol=1e-12)


def test_at_13_network_evaluations_dpmpp_2m_is_the_closest_to_the_exact_ode(gaussian):
    x_T = SIGMAS[0] * torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(13, 1, 1, 1, 1)
    expected = exact_ode_solution(x_T, SIGMAS[0].item(), gaussian.mu, gaussian.s)
    errors = {name: (solver(gaussian, x_T, karras_sigmas(steps)) - expected).abs().max().item()
              for name, solver, steps in (("euler", euler_sample, 13), ("heun", heun_sample, 7),
                                          ("dpmpp2m", dpmpp_2m_sample, 13))}
    assert errors["dpmpp2m"] < 0.6 * min(errors["euler"], errors["heun"])


def test_dpmpp_2m_refuses_churn(gaussian):
    with pytest.raises(ValueError, match="deterministic ODE only"):
        dpmpp_2m_sample(gaussian, torch.zeros(1, 1, 1, 2, 2), SIGMAS, **AUTHORS_CHURN)


@pytest.mark.parametrize("start_step", [0, 15, 35])
def test_the_start_schedule_re_discretises_the_range_after_t_i(start_step):
    assert torch.equal(start_schedule(SIGMAS, start_step), SIGMAS[start_step:])  # default: the paper's steps
    own = start_schedule(SIGMAS, start_step, 64 - start_step)
    assert torch.allclose(own, SIGMAS[start_step:], rtol=1e-12)  # the Karras rule is the schedule's own
    few = start_schedule(SIGMAS, start_step, 6)
    assert len(few) == 7 and few[0] == SIGMAS[start_step] and few[-1] == 0
    assert few[-2].item() == pytest.approx(SIGMAS[-2].item()) and bool((few[:-1] > few[1:]).all())


def test_the_start_schedule_rejects_too_few_steps_and_the_last_start_step():
    with pytest.raises(ValueError, match="at least 2"):
        start_schedule(SIGMAS, 15, 1)
    with pytest.raises(ValueError, match="start step below 63"):
        start_schedule(SIGMAS, 63, 4)
    with pytest.raises(ValueError, match="start_step must be in"):
        start_schedule(SIGMAS, 64)


@pytest.mark.parametrize("solver", ["heun", "euler", "dpmpp2m"])
def test_sdedit_with_fewer_steps_converges_to_the_paper_run(gaussian, solver):
    init = torch.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=torch.float64).reshape(2, 1, 3, 8, 8)

    def run(steps):
        return sdedit_sample(gaussian, init, SIGMAS, 15, generator=torch.Generator().manual_seed(7), solver=solver,
                             steps=steps)

    paper = run(None)
    assert torch.allclose(run(49), paper, rtol=0, atol=1e-12)  # 64 - 15 steps: the paper's own
    gaussian.calls = 0
    errors = [(run(steps) - paper).abs().max().item() for steps in (7, 13, 25)]
    assert gaussian.calls == (13 + 25 + 49 if solver == "heun" else 7 + 13 + 25)
    assert errors[0] > errors[1] > errors[2]


def test_one_sampler_config_gives_the_steps_after_every_start():
    assert (DEFAULT_SAMPLER.solver, DEFAULT_SAMPLER.churn, DEFAULT_SAMPLER.steps) == ("dpmpp2m", None, 13)
    assert len(PAPER_SAMPLER.schedule(15)) - 1 == 49 and PAPER_SAMPLER.solver_options()["S_churn"] == 80.0
    assert torch.equal(PAPER_SAMPLER.schedule(15), karras_sigmas()[15:])  # the paper's own steps
    assert DEFAULT_SAMPLER.respaced_steps(15) == 13 and len(DEFAULT_SAMPLER.schedule(15)) == 14
    assert DEFAULT_SAMPLER.respaced_steps(55) is None and len(DEFAULT_SAMPLER.schedule(55)) == 10  # capped at 9
    study = SamplerConfig("dpmpp2m", None, 13, cap_steps=False)
    assert study.respaced_steps(55) == 13 and len(study.schedule(55)) == 14  # equal steps at every start
    assert SamplerConfig.named("heun", "churn", None) == PAPER_SAMPLER and PAPER_SAMPLER.sampler == "churn"
    assert SamplerConfig.named("euler", "ode", 5).solver_options() == {} and PAPER_SAMPLER.churn.S_noise == 1.003
    with pytest.raises(ValueError, match="churn"):
        SamplerConfig.named("euler", "stochastic", 5)


def test_each_option_has_one_default_and_one_help_from_its_config_field(capsys):
    for command, expected in (("generate", ["--sampler-steps N|schedule", "(default: 13)", "(default: dpmpp2m)",
                                            "--t-start", "(default: 15)"]),
                              ("evaluate", ["(default: heun)", "(default: churn)", "(default: 15, 35, 55)"])):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert all(e in text for e in expected), (command, [e for e in expected if e not in text])
