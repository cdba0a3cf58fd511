"""The check of the training-loop exercise: the student's Algorithm 1, with stratified timesteps
and an EMA of the weights, trains a fresh moons denoiser within a CPU budget, and the samples of
its EMA model must come within 2x the real-vs-real floor.

Mistakes are diagnosed by behaviour, through hooks on the model the student's loop is handed:
    the t the model receives      floats, or T itself (t drawn from 1 ... T), never 0, another
                                  batch size, or not one t in each of the B slices of 0 ... T-1
    the gradient of its output    d loss / d output = 2 (output - target) / n for a mean squared
                                  error, so the target can be read back: x0 rows of the data set
                                  (x0-prediction), or the eps that rebuilds x_t from a data row with
                                  the right coefficients (and not with α_t, ᾱ_{t-1} or no roots)
    the gradient of one weight    larger than what this backward pass brought: no zero_grad
    the weights                   unchanged after a few steps: no backward or no optimizer step;
                                  their values after every step give the EMA the student's must equal
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import Tensor

from ..data import make_moons
from ..diffusion import loss_simple
from ..metrics import moons_real_floor, moons_scores
from ..models import MLPDenoiser
from ..samplers import ancestral_sample
from ..schedules import NoiseSchedule
from ..training import draw_timesteps, ema_multi_avg_fn, train
from .verdicts import ALPHA, ROOTS, Verdict, call, code_objects, run_check

STEPS = 3000           # gradient steps the check asks for
BATCH_SIZE = 500       # points per step: slices of width T / B = 2 for the stratified timesteps
DECAY = 0.995          # the EMA's decay: an average over the last ~1/(1 - d) = 200 steps
CPU_SECONDS = 60.0     # the budget for the student's loop (one thread)
N_POINTS = 1000        # points per sample set; W2 is exact at this N
SEEDS = (0, 1, 2)      # sample sets scored (W2 and the real floor, each with its seed)
MAX_RATIO = 2.0        # median W2 / median real floor that passes
TRAIN_CODE = code_objects({"ddpm_helpers.train": [train], "ddpm_helpers.loss_simple": [loss_simple],
                           "ddpm_helpers.training.draw_timesteps": [draw_timesteps],
                           "ddpm_helpers.training.ema_multi_avg_fn": [ema_multi_avg_fn]})
TARGETS = [  # (signal table, roots?, message): how x_t may have been formed from a data row and the noise
    ("alpha_bars", True, None), ("alphas", True, ALPHA),
    ("alpha_bars_prev", True, "x_t was formed with ᾱ_{t-1} (alpha_bars_prev) while the model is told t: "
     "use alpha_bars[t]"),
    ("alpha_bars", False, ROOTS),
]


class _Monitor:
    """Hooks on the model handed to the student's loop; `inspect` raises a Verdict at the first
    mistake the recorded behaviour shows (it runs before every forward pass, and at the end)."""

    def __init__(self, model: torch.nn.Module, data: Tensor, schedule: NoiseSchedule, cpu_seconds: float,
                 batch_size: int, decay: float):
        self.model, self.data, self.schedule, self.cpu_seconds = model, data, schedule, cpu_seconds
        self.batch_size, self.decay, self.steps_seen = batch_size, decay, 0
        self.forwards = self.backwards = self.zero_draws = self.draws = 0
        self.first: list | None = None       # [x_t, t, output, gradient of the output] of one batch
        self.analysed = False
        self.incoming: Tensor | None = None  # the gradient one backward pass brings to `weight`
        self.piled_up = False
        self.weight = list(model.parameters())[-1]
        self.initial = [p.detach().clone() for p in model.parameters()]
        self.last = [p.clone() for p in self.initial]          # the weights at the last forward pass
        # reference EMAs, updated whenever the weights changed: after each step (the exercise), from
        # the weights before it (one step behind), with d and 1 - d swapped; and one update back
        self.ema, self.ema_behind, self.ema_swapped = ([p.clone() for p in self.initial] for _ in range(3))
        self.ema_previous = [p.clone() for p in self.initial]
        self.handles = [model.register_forward_pre_hook(self.before, with_kwargs=True),
                        model.register_forward_hook(self.after, with_kwargs=True),
                        self.weight.register_hook(self.arrived),
                        self.weight.register_post_accumulate_grad_hook(self.accumulated)]
        self.start = time.process_time()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def cpu(self) -> float:
        return time.process_time() - self.start

    @staticmethod
    def _t(args, kwargs):
        return args[1] if len(args) > 1 else kwargs.get("t")

    def before(self, module, args, kwargs):
        t, T = self._t(args, kwargs), self.schedule.T
        if isinstance(t, Tensor) and t.numel():
            if t.is_floating_point():
                raise Verdict(f"the model was given t as {t.dtype}: give it integer timesteps (a LongTensor, "
                              "e.g. .long() rounds down), as the samplers will ask at 0 … T − 1")
            if int(t.max()) >= T or int(t.min()) < 0:
                bad = int(t.max()) if int(t.max()) >= T else int(t.min())
                raise Verdict(f"the model was given t = {bad}: code timesteps run 0 … T − 1 (the paper's 1 … T), "
                              "so the last slice ends at T − 1")
            if torch.is_grad_enabled():  # a training pass, not an evaluation the loop may add
                self._check_strata(t)
            self.draws += t.numel()
            self.zero_draws += int((t == 0).sum())
        self.forwards += 1
        self.track_steps()
        self.inspect()
        if self.cpu() > self.cpu_seconds:
            raise Verdict(f"training used more than {self.cpu_seconds:.0f} CPU-seconds for {self.backwards} steps: "
                          f"the budget is one minute on one thread (a batch of {self.batch_size} points takes a few ms)")

    def _check_strata(self, t: Tensor) -> None:
        B, T = self.batch_size, self.schedule.T
        if t.numel() != B:
            raise Verdict(f"the model was given a batch of {t.numel()} timesteps: the check asked for batch_size = {B}")
        counts = torch.bincount(t.flatten() // (T // B), minlength=B)
        if not bool((counts == 1).all()):
            raise Verdict(f"the timesteps of a batch are not stratified: {int((counts == 0).sum())} of the {B} slices "
                          f"of width T/B = {T // B} hold no t; each slice must hold exactly one (uniform inside it)")

    def track_steps(self) -> None:
        """Called before every forward pass and at the end: if the weights moved since the last
        call (an optimizer step), update the reference EMAs with the weights before and after it."""
        now = [p.detach() for p in self.model.parameters()]
        if all(torch.equal(a, b) for a, b in zip(now, self.last)):
            return
        self.steps_seen += 1
        self.ema_previous = [e.clone() for e in self.ema]
        torch._foreach_lerp_(self.ema, now, 1 - self.decay)      # d * ema + (1 - d) * weights
        torch._foreach_lerp_(self.ema_behind, self.last, 1 - self.decay)
        torch._foreach_lerp_(self.ema_swapped, now, self.decay)
        self.last = [p.clone() for p in now]

    def check_ema(self, ema_model: torch.nn.Module) -> None:
        """The student's EMA must equal d * ema + (1 - d) * weights after every step."""
        got = [p.detach().float().cpu() for p in ema_model.parameters()]
        if len(got) != len(self.ema) or any(a.shape != b.shape for a, b in zip(got, self.ema)):
            raise Verdict("the EMA model no longer has the model's weights: update its weights in place")

        def equals(reference):
            return all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(got, reference))

        formula = f"θ_EMA ← d·θ_EMA + (1 − d)·θ with d = decay = {self.decay:g}"
        if equals(self.ema):
            return
        if equals(self.initial):
            raise Verdict(f"the EMA model never changed: after every optimizer.step(), {formula}")
        if equals(self.ema_swapped) or equals(self.last):
            raise Verdict(f"your EMA model holds the latest weights, not an average of them: {formula} keeps "
                          "most of the old average (did you swap d and 1 − d?)")
        if equals(self.ema_behind) or equals(self.ema_previous):
            raise Verdict("your EMA is one step behind: update it right after optimizer.step(), from the weights "
                          "that step produced, in every step including the last")
        worst = max(float((a - b).abs().max()) for a, b in zip(got, self.ema))
        raise Verdict(f"your EMA model is not {formula}, updated once after each of the {self.steps_seen} steps "
                      f"(largest difference {worst:.2g})")

    def after(self, module, args, kwargs, output):
        if self.first is None and not self.analysed and isinstance(output, Tensor) and output.requires_grad and output.ndim == 2:
            self.first = [args[0].detach().clone(), self._t(args, kwargs).detach().clone(),
                          output.detach().clone(), None]
            output.register_hook(self.output_gradient)

    def output_gradient(self, grad: Tensor) -> None:
        if self.first is not None and self.first[3] is None:
            self.first[3] = grad.detach().clone()

    def arrived(self, grad: Tensor) -> None:
        self.incoming = grad.detach().clone()

    def accumulated(self, weight: Tensor) -> None:
        self.backwards += 1
        if self.incoming is not None and not torch.allclose(weight.grad, self.incoming, rtol=1e-5, atol=1e-8):
            self.piled_up = True

    def inspect(self) -> None:
        if self.piled_up:
            raise Verdict("gradients pile up from step to step: call optimizer.zero_grad() before "
                          "loss.backward() (backward adds to .grad, it does not overwrite it)")
        if self.first is not None and self.first[3] is not None and not self.analysed:
            self.analysed = True
            self._check_target(*self.first)
        if self.forwards > 3:
            if self.backwards == 0:
                raise Verdict("no gradient reached the model in 3 steps: call loss.backward()")
            if all(torch.equal(p, q) for p, q in zip(self.model.parameters(), self.initial)):
                raise Verdict("the weights did not change in 3 steps: call optimizer.step() after "
                              "loss.backward(), with an optimizer built on model.parameters()")

    def _check_target(self, x_t: Tensor, t: Tensor, output: Tensor, grad: Tensor) -> None:
        """Read back what the output was pulled towards, and how x_t was made (see the module doc)."""
        if t.is_floating_point() or t.ndim != 1:
            return
        scales = (grad.numel() / 2, grad.shape[0] / 2, 0.5)  # mean, sum per sample then mean, sum
        keep = (self.schedule.alpha_bars[t] > 0.05).nonzero().flatten()[:64]  # well-conditioned rows
        if len(keep) < 8:
            return
        x_t, t, output, grad = x_t[keep].double(), t[keep], output[keep].double(), grad[keep].double()
        for scale in scales:
            target = output - scale * grad
            if self._from_data(target):
                raise Verdict("you trained the model to predict x0: the target of L_simple is the noise ε "
                              "that made x_t, and the samplers read the output as ε")
            for table, roots, message in TARGETS:
                a = getattr(self.schedule, table).double()[t][:, None]
                signal, noise = (a.sqrt(), (1 - a).sqrt()) if roots else (a, 1 - a)
                if self._from_data((x_t - noise * target) / signal):
                    if message is None:
                        return
                    raise Verdict(message)

    def _from_data(self, points: Tensor) -> bool:
        """Are (almost) all these points rows of the data set, to rounding?"""
        nearest = torch.cdist(points, self.data.double()).min(dim=1).values
        return bool((nearest < 1e-4).double().mean() >= 0.9)

    def finish(self, steps: int, ema_model: torch.nn.Module) -> None:
        self.track_steps()
        self.inspect()
        if self.backwards != steps:
            raise Verdict(f"your loop took {self.backwards} gradient steps; the check asked for steps = {steps}")
        expected_zeros = self.draws / self.schedule.T
        if self.zero_draws == 0 and expected_zeros > 20:
            raise Verdict(f"the model never saw t = 0 in {self.draws:,} draws (about {expected_zeros:.0f} were due): "
                          "code timesteps run 0 … T − 1, so the first slice starts at t = 0")
        self.check_ema(ema_model)


def _score(model, schedule: NoiseSchedule, n_points: int, seeds) -> tuple[float, float]:
    """Median W2 of the model's ancestral samples and median real floor, over the same seeds."""
    w2, floor = [], []
    for seed in seeds:
        samples = ancestral_sample(model, (n_points, 2), schedule, progress=False,
                                   generator=torch.Generator().manual_seed(seed))
        if not bool(torch.isfinite(samples).all()):
            raise Verdict("the trained model's samples hold NaN or infinite values: training diverged "
                          "(a learning rate too high?)")
        w2.append(moons_scores(samples, seed=seed)["w2"])
        floor.append(moons_real_floor(n_points, seed=seed)["w2"])
    return statistics.median(w2), statistics.median(floor)


def check_training_loop(fn, *, steps: int = STEPS, cpu_seconds: float = CPU_SECONDS, n_points: int = N_POINTS,
                        seeds=SEEDS, max_ratio: float = MAX_RATIO) -> bool:
    """fn(model, ema_model, data, schedule, steps, batch_size=500, decay=0.995) trains `model` in
    place with `steps` steps of Algorithm 1 (Ho et al. 2020) on `data` (20,000 moons), one t in each
    of the batch_size slices of 0 ... T-1, and after every step moves `ema_model` (a copy of the
    model) to d * ema + (1 - d) * weights. The check hands it a fresh MLPDenoiser(128, 3), one CPU
    thread and seeded randomness, watches the run (see the module doc), then samples `n_points`
    points from the EMA model with ancestral sampling for each seed: the median W2 must be at most
    `max_ratio` times the median real-vs-real floor at the same N. The keyword arguments exist
    for the package's own tests; the notebook uses the defaults."""
    schedule = NoiseSchedule.linear(1000)
    data = make_moons(20_000, generator=torch.Generator().manual_seed(0))

    def body():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = MLPDenoiser(hidden=128, depth=3)
                ema_model = copy.deepcopy(model).requires_grad_(False)
                monitor = _Monitor(model, data, schedule, cpu_seconds, BATCH_SIZE, DECAY)
                try:
                    call(fn, model, ema_model, data.clone(), schedule, steps, batch_size=BATCH_SIZE, decay=DECAY,
                         delegates=TRAIN_CODE)
                finally:
                    monitor.remove()
                monitor.finish(steps, ema_model)
                cpu = monitor.cpu()
                w2, floor = _score(ema_model.cpu().eval(), schedule, n_points, seeds)
        finally:
            torch.set_num_threads(threads)
        summary = (f"EMA model: W2 {w2:.3f}, {w2 / floor:.2f}× the real floor {floor:.3f} ({n_points} points, median of "
                   f"{len(seeds)} seeds), after {steps} steps in {cpu:.0f} CPU-s")
        if not w2 <= max_ratio * floor:
            raise Verdict(f"the samples are too far from the moons: {summary}; at most {max_ratio:g}× passes. "
                          "Look at your loss curve: with Adam at lr = 2e-3 it falls to about 0.15 within "
                          "a few hundred steps")
        return f"passed: {summary}"

    return run_check("training_loop", body)
