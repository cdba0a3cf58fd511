"""Which MNIST training recipe draws the best digits after 5 minutes from scratch (issue: "Digits
from scratch in 5 CPU-minutes"). Every recipe gets the same compute, not the same wall time:

    python bench/recipe_search.py throughput            # images/s of each architecture x batch, 2 threads
    python bench/recipe_search.py run NAME --seed S     # train NAME for its 5-minute step budget, score it
    python bench/recipe_search.py run NAME --minutes M  # the same at another budget (the quality-vs-minutes curve)
    python bench/recipe_search.py run NAME --eta1       # also score DDIM-50 with eta = 1 (the ranking stays eta = 0)
    python bench/recipe_search.py report                # rank by median FD / real floor over seeds, and the curve

`throughput` times a training step of every (channels, blocks, batch) side by side in one process
on 1 thread, in CPU time (time.process_time: what the step costs, unaffected by other programs on a
shared machine), and divides it by the 2-thread speed-up measured on the idle machine by
bench/train_throughput.py (results/train_throughput_32_64_64_t1.json / _t2.json: 1.72x) to get
the step time on 2 threads; it writes bench/results/recipe_throughput.json (`--missing` times only
the architectures it lacks, side by side with the base recipe's, and scales them by the ratio of the
base's stored time to its time in this run, so that a slower or busier day does not change budgets).
A recipe's budget is
the number of optimizer steps it does in --minutes (5) at that rate. `run` trains with that step budget (on 1 thread, so
that two runs can share the 2 cores without changing what they learn; wall time does not enter),
draws 1,000 DDIM-50 (eta = 0) samples from one seeded x_T with the EMA weights (and with every
extra EMA the recipe lists, at 5 minutes only: the curve uses the recipe's own EMA; with --eta1 also
DDIM-50 with eta = 1 from the same x_T, the recipe's own EMA), and scores them with ddpm_helpers.metrics
against mnist_real_floor at the same N. One JSON per run goes to bench/results/recipe_search/; `report` aggregates them
into bench/results/recipe_search.json. Recipes with prediction "v" or "x0" train the same network to predict v
(wrapped in VPredictionAsEps) or x0 (UNet(prediction="x0")); both return the eps they imply, so that the
loss code and the samplers are unchanged.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from common import RESULTS, machine, table, write_result
from ddpm_helpers import training
from ddpm_helpers.data import load_mnist
from ddpm_helpers.metrics import mnist_real_floor, mnist_scores
from ddpm_helpers.models import UNet
from ddpm_helpers.samplers import ddim_sample
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.training import ema_multi_avg_fn, loss_weights, train, weighted_loss

RUNS = RESULTS / "recipe_search"
THROUGHPUT = RESULTS / "recipe_throughput.json"

# The old default of `python -m ddpm_helpers.train mnist` and the candidates, each one change away
# from "base" (the probe recipe plus min-SNR-5), so that the ranking says what each change does.
# base was the first winner, then base_p2_32_64 (the U-Net on folded 2x2 pixel squares); base_p2_32_64_x0
# (the same network predicting x0) is the current default.
OLD = dict(channels=(32, 64, 64), blocks=1, batch_size=128, lr=2e-3, warmup=200, lr_decay="cosine",
           ema_decay=0.999, timesteps="stratified", loss_weighting="none", schedule="linear")
BASE = dict(channels=(16, 32, 64), blocks=1, batch_size=64, lr=3e-3, warmup=100, lr_decay="cosine",
            ema_decay=0.99, timesteps="uniform", loss_weighting="min_snr", schedule="linear")
X0 = dict(BASE, channels=(32, 64), patch=2, prediction="x0")   # the current default, RECIPES["mnist"]
NOT_TRAIN_SETTINGS = ("channels", "blocks", "patch", "prediction", "schedule", "extra_emas")  # build / run use these
RANKED_MINUTES = 5.0   # the budget the recipes are ranked at (the target); other budgets make the curve
ETA1 = " eta=1"         # suffix of the scores of DDIM-50 with eta = 1 (run --eta1); the others are eta = 0

RECIPES = {
    "old_default": OLD,
    "base": dict(BASE, extra_emas=[0.995, 0.999, "power3", "power7"]),
    "base_lsimple": dict(BASE, loss_weighting="none"),
    "base_b32": dict(BASE, batch_size=32),
    "base_b128": dict(BASE, batch_size=128),
    "base_lr1e-3": dict(BASE, lr=1e-3),
    "base_lr6e-3": dict(BASE, lr=6e-3),
    "base_constant_lr": dict(BASE, lr_decay=None, extra_emas=["power3", "power7"]),
    "base_c32": dict(BASE, channels=(32, 64, 64)),
    "base_c16x2": dict(BASE, blocks=2),
    "base_c8": dict(BASE, channels=(8, 16, 32)),
    "base_cosine_schedule": dict(BASE, schedule="cosine"),
    "base_stratified": dict(BASE, timesteps="stratified"),
    # pixel unshuffle: the U-Net runs on 2x2 squares of pixels folded into 4 channels (UNet(patch=2)),
    # at 14 and 7 pixels, so that wider levels cost fewer FLOPs than UNet(16, 32, 64) at 28, 14 and 7
    "base_p2_32_64": dict(BASE, channels=(32, 64), patch=2, extra_emas=[0.995]),
    "base_p2_16_32": dict(BASE, channels=(16, 32), patch=2, extra_emas=[0.995, 0.999]),
    "base_p2_32_64_b32": dict(BASE, channels=(32, 64), patch=2, batch_size=32),
    "base_p2_32_64_x2": dict(BASE, channels=(32, 64), patch=2, blocks=2),
    "base_p2_48_96": dict(BASE, channels=(48, 96), patch=2),
    # t drawn so that the noise level sigma_t = sqrt((1 - a_t) / a_t) follows EDM's log-normal (edm_timesteps)
    "base_p2_32_64_edm_t": dict(BASE, channels=(32, 64), patch=2, timesteps="edm_lognormal"),
    # the network's output read as v (VPredictionAsEps) or x0 (UNet(prediction="x0")) and converted to eps,
    # min-SNR-5 as before
    "base_p2_32_64_v": dict(BASE, channels=(32, 64), patch=2, prediction="v"),
    "base_p2_32_64_x0": X0,
    # one change away from the default: batch 32 (which helped the eps network), and the min-SNR gamma, which
    # for an x0 network weights its squared x0 error by min(SNR_t, gamma)
    "base_p2_32_64_x0_b32": dict(X0, batch_size=32),
    **{f"base_p2_32_64_x0_gamma{gamma:g}": dict(X0, min_snr_gamma=gamma) for gamma in (0.25, 0.5, 1.0, 20.0)},
}


def arch_key(recipe: dict) -> str:
    patch = recipe.get("patch", 1)
    return (f"{','.join(map(str, recipe['channels']))}/b{recipe['blocks']}/batch{recipe['batch_size']}"
            + (f"/p{patch}" if patch != 1 else ""))


def own_ema(recipe: dict) -> str:
    """The key of the scores of the recipe's own EMA with DDIM-50 eta = 0 (+ ETA1: with eta = 1)."""
    return f"ema{recipe['ema_decay']}"


class VPredictionAsEps(torch.nn.Module):
    """A network that predicts v = sqrt(a_t) eps - sqrt(1 - a_t) x0 (Salimans & Ho 2022), seen from
    outside as the eps-predictor it implies (a_t = alpha_bar_t): eps = sqrt(1 - a_t) x_t + sqrt(a_t) v,
    so that training (the eps loss) and every sampler stay as they are. The eps loss of this module is
    the v loss times a_t; with the min-SNR weights min(SNR_t, g) / SNR_t it is exactly Hang et al.'s
    min-SNR-g loss of v-prediction, min(SNR_t, g) / (SNR_t + 1) ||v - v_theta||^2. (x0-prediction is
    UNet(prediction="x0"), which does the same in the package.)"""

    def __init__(self, net: torch.nn.Module, schedule: NoiseSchedule):
        super().__init__()
        self.net = net
        a = schedule.alpha_bars.double()
        self.register_buffer("sqrt_a", a.sqrt().float())
        self.register_buffer("sqrt_1ma", (1 - a).sqrt().float())

    def forward(self, x_t, t):
        sqrt_a, sqrt_1ma = (c[t].view(-1, 1, 1, 1) for c in (self.sqrt_a, self.sqrt_1ma))
        return sqrt_1ma * x_t + sqrt_a * self.net(x_t, t)


def edm_timesteps(schedule: NoiseSchedule, p_mean: float = -1.2, p_std: float = 1.2):
    """A draw_timesteps replacement: ln sigma ~ N(p_mean, p_std^2), the training noise levels of Karras
    et al. 2022 (EDM, Table 1), each mapped to the first t whose sigma_t = sqrt((1 - a_t) / a_t) reaches it
    (the last t where none does). With the linear schedule 95% of the draws fall in t = 5..485, half below 88: fewer
    at the nearly clean and the nearly pure-noise ends than uniform t."""
    a = schedule.alpha_bars.double()
    sigmas = ((1 - a) / a).sqrt()

    def draw(batch, T, kind, generator):
        log_sigma = p_mean + p_std * torch.randn(batch, generator=generator, dtype=torch.float64)
        return torch.searchsorted(sigmas, log_sigma.exp()).clamp_(max=T - 1)
    return draw


def build(recipe: dict, schedule: NoiseSchedule) -> torch.nn.Module:
    prediction = recipe.get("prediction", "eps")
    net = UNet(channels=recipe["channels"], blocks=recipe["blocks"], patch=recipe.get("patch", 1),
               **(dict(prediction="x0", schedule=schedule) if prediction == "x0" else {}))
    return VPredictionAsEps(net, schedule) if prediction == "v" else net


def two_thread_speedup() -> float:
    one, two = (json.loads((RESULTS / f"train_throughput_32_64_64_t{k}.json").read_text())["row"]["step_s"]
                for k in (1, 2))
    return one / two


def measure_throughput(args) -> None:
    torch.set_num_threads(1)
    speedup = two_thread_speedup()
    schedule = NoiseSchedule.linear(T=1000)
    weights = loss_weights(schedule, "min_snr")
    stored = json.loads(THROUGHPUT.read_text()) if THROUGHPUT.exists() and args.missing else {"rows": {}}
    rows, reference = stored["rows"], arch_key(BASE)
    by_key = {arch_key(r): r for r in RECIPES.values()}      # one recipe per architecture x batch
    keys = sorted(set(by_key) - set(rows))
    timed = {}
    for key in keys + ([reference] if keys and reference in rows else []):
        recipe = by_key[key]
        torch.manual_seed(0)
        model = build(recipe, schedule)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x0 = torch.rand(recipe["batch_size"], 1, 28, 28) * 2 - 1
        times = []
        for _ in range(args.repeats):
            start = time.process_time()
            t = torch.randint(0, schedule.T, (x0.shape[0],))
            loss = weighted_loss(model, x0, schedule, t, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.process_time() - start)
        timed[key] = statistics.median(times[2:])
        print(f"{key}: {timed[key]:.3f} CPU-s/step on 1 thread", flush=True)
    scale = rows[reference]["cpu_s_1_thread"] / timed.pop(reference) if reference in timed else 1.0
    for key, raw in timed.items():
        cpu_s = raw * scale
        rows[key] = dict(cpu_s_1_thread=cpu_s, step_s=cpu_s / speedup,
                         images_per_s=by_key[key]["batch_size"] * speedup / cpu_s,
                         **({} if scale == 1.0 else dict(measured_cpu_s=raw, scaled_by=scale)))
        print(f"{key}: {cpu_s:.3f} CPU-s/step (x {scale:.3f}, the base's stored / today's time) -> "
              f"{rows[key]['step_s']:.3f} s/step, {rows[key]['images_per_s']:.0f} images/s on 2 threads", flush=True)
    result = dict(stored, machine=stored.get("machine", machine()), timed="CPU time on 1 thread / 2-thread speed-up",
                  two_thread_speedup=speedup, repeats=args.repeats, rows=rows)
    if scale != 1.0:
        result.setdefault("added", []).append(dict(machine=machine(), rows=list(timed), reference=reference,
                                                   scale=scale))
    write_result("recipe_throughput", result)


def budget_steps(recipe: dict, minutes: float) -> int:
    rows = json.loads(THROUGHPUT.read_text())["rows"]
    return max(1, round(minutes * 60 / rows[arch_key(recipe)]["step_s"]))


class ExtraEMA:
    """More EMAs of the raw weights next to the one train() keeps: a constant decay d (with the same
    warm-up min(d, (1 + n) / (10 + n)) as training.ema_multi_avg_fn) or "powerG", the power EMA of
    Karras et al. 2024, d_n = (1 - 1/n)^(G + 1), which averages over a fixed share of the run
    whatever its length."""

    def __init__(self, model, kind):
        self.kind, self.n = kind, 0
        self.params = [p.detach().clone() for p in model.parameters()]

    def update(self, model) -> None:
        self.n += 1
        current = [p.detach() for p in model.parameters()]
        if isinstance(self.kind, str):
            d = (1 - 1 / self.n) ** (float(self.kind[len("power"):]) + 1)
            torch._foreach_lerp_(self.params, current, 1 - d)
        elif self.n == 1:                                   # the first update copies, as AveragedModel does
            torch._foreach_copy_(self.params, current)
        else:                                               # train()'s own EMA update, n - 1 averaged so far
            ema_multi_avg_fn(self.kind)(self.params, current, self.n - 1)

    def model_like(self, model):
        clone = copy.deepcopy(model).eval()
        with torch.no_grad():
            for p, q in zip(clone.parameters(), self.params):
                p.copy_(q)
        return clone


def run(args) -> None:
    recipe = RECIPES[args.name]
    steps = budget_steps(recipe, args.minutes)
    data, _ = load_mnist(train=True, root=args.data_root)
    schedule = getattr(NoiseSchedule, recipe["schedule"])(T=1000)
    torch.manual_seed(args.seed)
    model = build(recipe, schedule)
    extras = [ExtraEMA(model, kind) for kind in recipe.get("extra_emas", [])] if args.minutes == RANKED_MINUTES else []
    settings = {k: v for k, v in recipe.items() if k not in NOT_TRAIN_SETTINGS}
    edm = settings["timesteps"] == "edm_lognormal"
    if edm:   # train() knows only "uniform" and "stratified": swap its draw for this run
        settings["timesteps"] = "uniform"
    start = time.perf_counter()
    with mock.patch.object(training, "draw_timesteps", edm_timesteps(schedule)) if edm else contextlib.nullcontext():
        result = train(model, data, schedule, steps=steps, generator=torch.Generator().manual_seed(args.seed),
                       device="cpu", num_threads=1, progress=not args.no_progress,
                       callback=lambda step, seconds, ema: [e.update(model) for e in extras], **settings)
    train_s = time.perf_counter() - start
    torch.set_num_threads(args.threads)
    own = own_ema(recipe)
    variants = {own: (result.model, 0.0)}
    variants.update({f"ema{e.kind}": (e.model_like(result.model), 0.0) for e in extras})
    if args.eta1:
        variants[own + ETA1] = (result.model, 1.0)
    floor = mnist_real_floor(args.n, seed=0, memorization=False)
    scores = {}
    for name, (net, eta) in variants.items():
        with torch.inference_mode():
            x0 = ddim_sample(net, (args.n, 1, 28, 28), schedule, steps=50, eta=eta,
                             generator=torch.Generator().manual_seed(1000 + args.seed), progress=False)
        s = mnist_scores(x0.clamp(-1, 1), memorization=False)
        scores[name] = dict(fd=s["fd"], fd_ratio=s["fd"] / floor["fd"], confident=s["confident"],
                            min_class=min(s["class_share"]), max_class=max(s["class_share"]))
        print(f"{args.name} seed {args.seed} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores[name].items()),
              flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.minutes == RANKED_MINUTES else f"_{args.minutes:g}min"
    (RUNS / f"{args.name}_s{args.seed}{suffix}.json").write_text(json.dumps(dict(
        name=args.name, seed=args.seed, recipe=recipe, minutes_equivalent=args.minutes, steps=steps,
        images=steps * recipe["batch_size"], train_s_on_1_thread=train_s, final_loss=sum(result.losses[-100:]) / 100,
        n=args.n, floor_fd=floor["fd"], scores=scores, machine=machine()), indent=2, default=str) + "\n")


def report(args) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*.json"))]
    main_runs = [r for r in runs if r["minutes_equivalent"] == RANKED_MINUTES]
    groups = {}
    for r in main_runs:
        for variant, s in r["scores"].items():
            if variant.endswith(ETA1):
                continue
            label = r["name"] if variant == own_ema(r["recipe"]) else f"{r['name']} [{variant}]"
            groups.setdefault(label, []).append((r, s))
    rows = [summary(label, items) for label, items in groups.items()]
    rows.sort(key=lambda r: r["fd_ratio_median"])
    print("5 minutes on 2 threads (steps from recipe_throughput.json); seeds < 2 is a single run:")
    print(table(rows, list(rows[0])))
    curve = []
    for name in ("old_default", "base", "base_p2_32_64", "base_p2_32_64_x0"):
        for suffix in ("", ETA1):
            by_minutes = {}
            for r in runs:
                own = own_ema(r["recipe"]) + suffix
                if r["name"] == name and own in r["scores"]:
                    by_minutes.setdefault(r["minutes_equivalent"], []).append((r, r["scores"][own]))
            curve += [dict(minutes=m, eta=1 if suffix else 0, **summary(name, items))
                      for m, items in sorted(by_minutes.items())]
    print("quality against minutes: the old default (MNIST_2025), the first default of this search (base), "
          "the folded network (base_p2_32_64) and the current default (base_p2_32_64_x0, RECIPES['mnist'] "
          "of ddpm_helpers.train), "
          "DDIM-50 with eta = 0 and (runs with --eta1) eta = 1:")
    print(table(curve, list(curve[0])))
    throughput = json.loads(THROUGHPUT.read_text())
    write_result("recipe_search", dict(minutes=5, n=main_runs[0]["n"], floor_fd=main_runs[0]["floor_fd"],
                                       throughput=throughput, ranking=rows, curve=curve, recipes=RECIPES,
                                       machine=machine()))


def summary(label: str, items: list) -> dict:
    ratios = [s["fd_ratio"] for _, s in items]
    return dict(recipe=label, seeds=len(items), steps=items[0][0]["steps"],
                fd_ratio_median=statistics.median(ratios), fd_ratio_min=min(ratios), fd_ratio_max=max(ratios),
                confident_median=statistics.median(s["confident"] for _, s in items),
                min_class=min(s["min_class"] for _, s in items), max_class=max(s["max_class"] for _, s in items))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--missing", action="store_true", help="time only architectures the JSON does not have yet")
    p = sub.add_parser("run")
    p.add_argument("name", choices=list(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=RANKED_MINUTES)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="threads for sampling and scoring")
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--eta1", action="store_true",
                   help="also score the recipe's own EMA with DDIM-50 eta = 1 (same x_T; the ranking stays eta = 0)")
    sub.add_parser("report")
    args = parser.parse_args()
    {"throughput": measure_throughput, "run": run, "report": report}[args.phase](args)


if __name__ == "__main__":
    main()
