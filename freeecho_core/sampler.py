"""Samplers for the reverse ODE of paper eq. (2), SDEdit conditioning and classifier-free guidance.

Every sampler is a pure function of (denoiser, x, sigmas): `denoiser(x, sigma)` returns the estimate
of the clean video for a tensor sigma of shape (B,) or a scalar; `sigmas` is a decreasing schedule
ending in 0 (see `edm.karras_sigmas`); `x` is the state at noise level sigmas[0]. The ODE is
integrated in float64 whatever the network's dtype (the denoiser casts for its network).

Randomness comes from `generator`: one `torch.Generator`, or a list with one generator per sample so
that a sample does not change with the batch it is drawn in. `after_step(x, sigma)` may change the state after
each step (the guidance of `guidance.Guidance`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from freeecho_core.edm import Generators, karras_sigmas, randn_per_sample
from freeecho_core.guidance import Guidance, Guide
from freeecho_core.options import finite_number, option, sampler_steps
from freeecho_core.progress import progress_bar

Denoiser = Callable[..., torch.Tensor]
# A change of the state after each step, (x, sigma the step ended at) -> x: the guidance of `guidance.Guidance`.
AfterStep = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _edm_solve(denoiser, x, sigmas, second_order, S_churn, S_tmin, S_tmax, S_noise, generator, progress, after_step):
    """EDM Algorithm 2 (second_order=True: Heun) or its first-order truncation (Euler)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=x.device)
    num_steps = len(sigmas) - 1
    x_next = x.to(torch.float64)
    steps = zip(sigmas[:-1], sigmas[1:])
    for t_cur, t_next in progress_bar(steps, total=num_steps, disable=not progress, desc="sampling"):
        x_cur = x_next
        # Algorithm 2 lines 4-6: temporarily raise the noise level to t_hat ("churn").
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_tmin <= t_cur <= S_tmax else 0.0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0:
            eps = randn_per_sample(x_cur.shape, generator, device=x.device)
            x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * S_noise * eps
        else:
            x_hat = x_cur
        # Line 7: Euler step from t_hat to t_next along eq. (2), dx/dsigma = (x - D(x, sigma)) / sigma.
        d_cur = (x_hat - denoiser(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        # Lines 9-11: second-order correction, skipped on the final step to sigma = 0.
        if second_order and t_next > 0:
            d_prime = (x_next - denoiser(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        if after_step is not None:
            x_next = after_step(x_next, t_next)
    return x_next.to(x.dtype)


def heun_sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = float("inf"),
    S_noise: float = 1.0,
    generator: Generators = None,
    progress: bool = False,
    after_step: AfterStep | None = None,
) -> torch.Tensor:
    """Solve eq. (2) from sigmas[0] to sigmas[-1] with EDM Algorithm 2 (Heun's 2nd-order method).

    S_churn = 0 is the deterministic sampler (EDM Algorithm 1). With churn, the step-wise noise
    increase is gamma = min(S_churn / N, sqrt(2) - 1) for sigma in [S_tmin, S_tmax], N = len(sigmas) - 1.
    The authors used S_churn=80, S_tmin=0.05, S_tmax=50, S_noise=1.003. Network evaluations:
    2N - 1 (127 for the full 64-step schedule, 97 from t_i = 15).
    """
    return _edm_solve(denoiser, x, sigmas, True, S_churn, S_tmin, S_tmax, S_noise, generator, progress, after_step)


def euler_sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = float("inf"),
    S_noise: float = 1.0,
    generator: Generators = None,
    progress: bool = False,
    after_step: AfterStep | None = None,
) -> torch.Tensor:
    """Solve eq. (2) with Euler's method (Algorithm 2 without its correction): N network evaluations."""
    return _edm_solve(denoiser, x, sigmas, False, S_churn, S_tmin, S_tmax, S_noise, generator, progress, after_step)


def dpmpp_2m_sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = float("inf"),
    S_noise: float = 1.0,
    generator: Generators = None,
    progress: bool = False,
    after_step: AfterStep | None = None,
) -> torch.Tensor:
    """Solve eq. (2) with DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a second-order
    multistep method on the data prediction D, one network evaluation per step (N in all).

    In the EDM parameterisation (alpha = 1, the noise level is sigma, lambda = -log sigma), a step from s to t
    with h = log(s / t) is x_t = (t / s) x_s + (1 - t / s) D', where D' = D_s on the first step (this is the
    Euler step) and D' = (1 + 1 / 2r) D_s - (1 / 2r) D_prev after it, r = h_prev / h. The last step, to
    sigma = 0, is x = D_s. It integrates the ODE only: S_churn > 0 is refused (S_tmin, S_tmax, S_noise and
    `generator` are accepted for the common signature of SOLVERS and unused).
    """
    if S_churn:
        raise ValueError("the dpmpp2m solver integrates the deterministic ODE only; use the ode sampler with it "
                         "(or heun/euler for the authors' churn)")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=x.device)
    dtype, x = x.dtype, x.to(torch.float64)
    D_prev, h_prev = None, None
    pairs = zip(sigmas[:-1], sigmas[1:])
    for s, t in progress_bar(pairs, total=len(sigmas) - 1, disable=not progress, desc="sampling"):
        D = denoiser(x, s).to(torch.float64)
        if t == 0:
            x = D
        else:
            h = torch.log(s / t)
            D_mix = D if D_prev is None else D + (D - D_prev) * h / (2 * h_prev)
            x = (t / s) * x + (1 - t / s) * D_mix
            D_prev, h_prev = D, h
        if after_step is not None:
            x = after_step(x, t)
    return x.to(dtype)


SOLVERS = {"heun": heun_sample, "euler": euler_sample, "dpmpp2m": dpmpp_2m_sample}


def start_schedule(sigmas, start_step: int, steps: int | None = None) -> torch.Tensor:
    """The noise levels integrated from the start step t_i: the schedule's own sigmas[start_step:] (64 - t_i
    steps on the paper's schedule), or, with `steps`, [sigmas[start_step], sigma_min] re-discretised into
    `steps` steps by the Karras rule (EDM eq. (5), rho = 7), the last of them to 0. With steps = 64 - t_i the two
    agree (the rule is the schedule's own)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    last = len(sigmas) - 2  # sigma_min; sigmas[-1] is 0
    if not 0 <= start_step <= last:
        raise ValueError(f"start_step must be in [0, {last}], got {start_step}")
    if steps is None:
        return sigmas[start_step:]
    if steps < 2 or start_step == last:
        raise ValueError(f"sampler steps must be at least 2 and the start step below {last}, got {steps} steps "
                         f"from {start_step}")
    return karras_sigmas(steps, sigmas[last].item(), sigmas[start_step].item())


@dataclass(frozen=True)
class Churn:
    """The stochasticity of EDM Algorithm 2 (lines 4-6): at noise levels in [S_tmin, S_tmax] each step first
    raises sigma by gamma = min(S_churn / N, sqrt(2) - 1) and adds noise of std S_noise to match."""

    S_churn: float = 80.0
    S_tmin: float = 0.05
    S_tmax: float = 50.0
    S_noise: float = 1.003


AUTHORS_CHURN = Churn()  # the authors' script: S_churn 80, S_tmin 0.05, S_tmax 50, S_noise 1.003
SAMPLERS = ("churn", "ode")  # the names of `SamplerConfig.churn` in options and records: the churn, or none


def churn_named(name: str) -> Churn | None:
    """"churn" -> the authors' churn, "ode" -> None (the `--sampler` option)."""
    if name not in SAMPLERS:
        raise ValueError(f"expected one of {SAMPLERS}, got {name!r}")
    return AUTHORS_CHURN if name == "churn" else None


churn_named.__name__ = "sampler (churn or ode)"


def sampler_named(churn: Churn | None) -> str:
    """The name of a churn setting in options and records: "churn" or "ode" (None)."""
    return SAMPLERS[0] if churn is not None else SAMPLERS[1]


@dataclass(frozen=True)
class SamplerConfig:
    """How videos are sampled after the start step t_i: the solver, its churn (None: the deterministic ODE), the
    steps, and the Cls-Free guidance weight. `PAPER_SAMPLER` is the authors' setting, `DEFAULT_SAMPLER` the one
    `freeecho generate` and `FreeEcho` use (the benchmark page's quality study chose it)."""

    solver: str = field(default="dpmpp2m", metadata=option(
        "heun: EDM's second-order steps (2N - 1 network evaluations for N steps); euler: one evaluation a step; "
        "dpmpp2m: DPM-Solver++(2M), second order at one evaluation a step, with the ode sampler only",
        choices=sorted(SOLVERS)))
    churn: Churn | None = field(default=None, metadata=option(
        "churn: the authors' stochastic sampler (S_churn 80, noise added back at each step); ode: the "
        "deterministic probability-flow ODE", churn_named, flag="--sampler", shown=sampler_named,
        metavar="{churn,ode}"))
    steps: int | None = field(default=13, metadata=option(
        "steps from the start noise level sigma(t_i) to the end, re-spaced by the Karras rule (rho 7), or "
        "'schedule': the 64-step schedule's own, 64 - t_i (Cls-Free: 64)", sampler_steps, flag="--sampler-steps",
        shown=lambda steps: "schedule" if steps is None else str(steps), metavar="N|schedule"))
    guidance: float = field(default=7.0, metadata=option("Cls-Free guidance weight w (paper: 7)", finite_number))
    # True: `steps` never exceed the schedule's own 64 - t_i, so a late start (t_i > 51 for 13 steps) keeps the
    # schedule's steps. False: `steps` re-space [sigma(t_i), sigma_min] at every t_i (the t_i and NFE studies,
    # which compare starts and solvers at equal steps).
    cap_steps: bool = True

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if self.solver == "dpmpp2m" and self.churn is not None:
            raise ValueError("the dpmpp2m solver integrates the deterministic ODE only; use it with the ode sampler")
        if self.steps is not None and self.steps < 2:
            raise ValueError(f"sampler steps must be at least 2, got {self.steps}")

    @classmethod
    def named(cls, solver: str, sampler: str, steps: int | None, guidance: float = 7.0, cap_steps: bool = True):
        """A config from option values: `sampler` "churn" (the authors') or "ode"."""
        return cls(solver, churn_named(sampler), steps, guidance, cap_steps)

    @property
    def sampler(self) -> str:
        """"churn" or "ode", as options and records name it."""
        return sampler_named(self.churn)

    def respaced_steps(self, start_step: int) -> int | None:
        """The steps after `start_step` when they re-space the range; None where the schedule's own steps,
        sigmas[start_step:], are integrated (no `steps`, or `cap_steps` and steps >= 64 - t_i)."""
        own = len(karras_sigmas()) - 1 - start_step
        return None if self.steps is None or (self.cap_steps and self.steps >= own) else self.steps

    def schedule(self, start_step: int) -> torch.Tensor:
        """The noise levels integrated from t_i = `start_step` of the paper's 64-step schedule to 0."""
        return start_schedule(karras_sigmas(), start_step, self.respaced_steps(start_step))

    def network_evaluations(self, start_step: int) -> int:
        """Network evaluations of one video from `start_step`: N steps cost N (Euler, DPM-Solver++(2M)) or 2N - 1
        (Heun: no correction on the last step); a Cls-Free evaluation runs both branches in one batch."""
        steps = len(self.schedule(start_step)) - 1
        return 2 * steps - 1 if self.solver == "heun" else steps

    def solver_options(self) -> dict:
        """The churn keywords of the solvers (none for the ODE)."""
        return {} if self.churn is None else asdict(self.churn)


PAPER_SAMPLER = SamplerConfig("heun", AUTHORS_CHURN, None)  # EDM Algorithm 2 with the authors' churn, 64 - t_i steps
# DPM-Solver++(2M) in 13 steps, the deterministic ODE: 13 network evaluations a video, the fewest at which the quality
# study (results/bench/nfe-quality.json, the benchmark page) kept Dice LV and SSIM within one standard error of the
# paper's Heun over the schedule's 49 steps (97 evaluations); the churn washed the map out of the stored models'
# videos (notebook 05).
DEFAULT_SAMPLER = SamplerConfig()


def noise_to_step(init: torch.Tensor, sigmas, start_step: int, generator: Generators = None) -> torch.Tensor:
    """The state SDEdit starts from (paper Fig. 1): x = init + sigmas[start_step] * n, n ~ N(0, I) drawn
    from `generator` (per sample with a list). Returns float64: exactly what `sdedit_sample` integrates
    from, so its first network call receives this x (for the same fresh generators)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=init.device)
    if not 0 <= start_step < len(sigmas) - 1:
        raise ValueError(f"start_step must be in [0, {len(sigmas) - 2}], got {start_step}")
    return init.to(torch.float64) + sigmas[start_step] * randn_per_sample(init.shape, generator, device=init.device)


def sdedit_sample(
    denoiser: Denoiser,
    init: torch.Tensor,
    sigmas: torch.Tensor,
    start_step: int,
    *,
    generator: Generators = None,
    solver: str = "heun",
    steps: int | None = None,
    guide: Guide | None = None,
    guide_weight: torch.Tensor | None = None,
    **solver_kw,
) -> torch.Tensor:
    """SDEdit (Meng et al. 2022) as Free-Echo uses it (paper section 2, Fig. 1).

    The clean (pseudo) video `init` is noised to exactly sigmas[start_step],
    x = init + sigmas[start_step] * n with n ~ N(0, I) drawn first from `generator`, and eq. (2) is solved
    from there on `start_schedule(sigmas, start_step, steps)`: sigmas[start_step:] (the paper), or `steps`
    steps re-discretised over the same range. No network evaluation happens before `start_step` (the paper's t_i).
    With a `guide` (not the paper's method: `guidance`), the start is first calibrated and/or each step's low band
    is pulled to the noised `init`'s, inside the weight `guide_weight` (broadcastable to init; None: everywhere).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=init.device)
    schedule = start_schedule(sigmas, start_step, steps).to(init.device)
    x = noise_to_step(init, sigmas, start_step, generator)
    if guide is not None:
        guide.check(start_step, init.shape[-1])
        guidance = Guidance(guide, init, weight=guide_weight, generator=generator)
        x = guidance.calibrate(denoiser, x, schedule[0])
        solver_kw["after_step"] = guidance.after_step if guide.ilvr else None
    out = SOLVERS[solver](denoiser, x, schedule, generator=generator, **solver_kw)
    return out.to(init.dtype)


def cfg_denoiser(denoiser: Denoiser, cond: torch.Tensor, w: float) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022): D_u + w (D_c - D_u) as a plain denoiser.

    `denoiser(x, sigma, cond)` is a conditional model whose null condition is the all-zero map
    (the condition dropped in training). w = 1 is the conditional model, w = 0 the unconditional one;
    the paper uses w = 7. Both branches run in one batched network call.
    """
    null = torch.zeros_like(cond)

    def guided(x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        D = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, null]))
        D_c, D_u = D.chunk(2)
        return D_u + w * (D_c - D_u)

    return guided


def seeded_generators(seeds: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One seeded generator per sample (sample b draws only from seeds[b])."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def reference_sdedit_sample(
    denoiser: Denoiser,
    init: torch.Tensor,
    sigmas: torch.Tensor,
    start_step: int,
    *,
    generator: Generators = None,
    S_churn: float = 80.0,
    S_tmin: float = 0.05,
    S_tmax: float = 50.0,
    S_noise: float = 1.003,
    progress: bool = False,
) -> torch.Tensor:
    """The authors' SDEdit as their released script ran it (book/design.md, section 2): a `reference` mode for
    comparison (cost profile, ablations), never the method. Use `sdedit_sample` for Free-Echo.

    EDM Algorithm 2 (stochastic Heun, the authors' S_churn, S_tmin, S_tmax, S_noise) over the WHOLE schedule,
    with these quirks, each reproduced on purpose:
    1. The run starts from pure noise, x = sigmas[0] * n (n drawn first from `generator`), and the network is
       evaluated at every step before `start_step` too: 2 * start_step evaluations whose result is thrown
       away. A full 64-step run costs 127 network evaluations whatever t_i is (the clean method: 97 at t_i = 15).
    2. At step t_i the state is overwritten with the clean pseudo video `init`; no noise at level
       sigmas[t_i] is added. The only noise it gets is the step's churn (Algorithm 2 lines 4-6).
    3. With churn active (S_tmin <= sigma_i <= S_tmax), gamma = sqrt(2) - 1, so the noise has std
       S_noise * sigma_i while the network is told t_hat = sqrt(2) * sigma_i: the state is less noisy than
       the level the denoiser assumes.
    4. Above S_tmax (t_i <= 5 on the 64-step schedule, sigma > 50) there is no churn, hence no noise at all:
       the network is told sigma_i but sees the noise-free pseudo video.
    The churn factor gamma = min(S_churn / N, sqrt(2) - 1) uses N = len(sigmas) - 1 of the full schedule, as
    in one loop over all steps. The random stream (initial noise, then one churn draw per step) is the one a
    single loop would consume. Returns a tensor of init's dtype and shape.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64, device=init.device)
    N = len(sigmas) - 1
    if not 0 <= start_step < N:
        raise ValueError(f"start_step must be in [0, {N - 1}], got {start_step}")
    churn = dict(S_tmin=S_tmin, S_tmax=S_tmax, S_noise=S_noise, generator=generator, progress=progress)
    x_T = sigmas[0] * randn_per_sample(init.shape, generator, device=init.device)  # quirk 1: pure noise
    if start_step > 0:  # quirk 1: the evaluations before t_i, discarded. S_churn is rescaled so that
        # gamma = S_churn / N as in the full loop (heun_sample divides by its own number of steps).
        heun_sample(denoiser, x_T, sigmas[: start_step + 1], S_churn=S_churn * start_step / N, **churn)
    # Quirks 2-4: overwrite the state with the pseudo video, then Algorithm 2 from t_i on.
    x = heun_sample(denoiser, init.to(torch.float64), sigmas[start_step:], S_churn=S_churn * (N - start_step) / N,
                    **churn)
    return x.to(init.dtype)
