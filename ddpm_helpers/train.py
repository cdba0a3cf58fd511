"""Command line that trains (and reproduces) the shipped weights.

    python -m ddpm_helpers.train moons --seconds 60 --out moons_mlp.pt --seed 0
    python -m ddpm_helpers.train mnist --minutes 5 --out mnist_unet.pt --seed 0 [--data-root DIR]
    python -m ddpm_helpers.train mnist --minutes 5 --init mnist_unet.pt --out longer.pt   # one more cycle
    python -m ddpm_helpers.train mnist --conditional --minutes 5 --out cond.pt   # class-conditional (notebook 07)

Each run prints what it did and writes one checkpoint (see ddpm_helpers.checkpoints) whose
provenance records this command, the minutes, the machine and the settings.
"""
from __future__ import annotations

import argparse
import shlex
import sys

import torch

from .checkpoints import load_checkpoint, read_checkpoint, save_checkpoint
from .data import load_mnist, make_moons
from .guidance import init_from_unconditional
from .models import MLPDenoiser, UNet
from .schedules import NoiseSchedule
from .training import train

# The recipes behind the shipped files; every value can be overridden on the command line.
RECIPES = {
    "moons": dict(hidden=128, depth=3, n_points=50_000, batch_size=256, lr=2e-3, warmup=100, grad_clip=1.0,
                  weight_decay=0.0, ema_decay=0.995, timesteps="stratified", loss_weighting="none",
                  min_snr_gamma=5.0, schedule="linear"),
    # From scratch in a few CPU-minutes (bench/recipe_search.py): a U-Net on 2x2 pixel squares folded into
    # channels (levels at 14 and 7 px; a quarter of the shipped network's FLOPs per digit, 4x its digits
    # per second) that predicts x0 (UNet(prediction="x0") returns the eps it implies), batches of 64,
    # a high peak learning rate, a short EMA and min-SNR-5.
    # The shipped mnist_unet is this recipe on the shipped architecture with a GPU's batch size (the README gives
    # its command); mnist_unet_cond started from the earlier mnist_unet, trained with MNIST_2025 below.
    "mnist": dict(channels="32,64", blocks=1, patch=2, prediction="x0", batch_size=64, lr=3e-3, warmup=100,
                  grad_clip=1.0, weight_decay=0.0, ema_decay=0.99, timesteps="uniform", loss_weighting="min_snr",
                  min_snr_gamma=5.0, schedule="linear"),
}
# The recipe behind the earlier mnist_unet.pt and the mnist_unet_cond.pt made from it (the default before the
# recipe search): pass these options to rerun their recorded commands.
MNIST_2025 = dict(channels="32,64,64", blocks=1, patch=1, prediction="eps", batch_size=128, lr=2e-3, warmup=200,
                  grad_clip=1.0, weight_decay=0.0, ema_decay=0.999, timesteps="stratified", loss_weighting="none",
                  min_snr_gamma=5.0, schedule="linear")


RECIPE_HELP = {
    "batch_size": "training batch size",
    "lr": "peak AdamW learning rate",
    "warmup": "steps of linear learning-rate warm-up",
    "grad_clip": "clip the gradient norm to this value (0: no clipping)",
    "weight_decay": "AdamW weight decay",
    "ema_decay": "decay of the exponential moving average of the weights (the saved model)",
    "timesteps": "how t is drawn per batch (see ddpm_helpers.training.draw_timesteps)",
    "loss_weighting": "none: L_simple; min_snr: min(SNR_t, gamma) / SNR_t (Hang et al. 2023)",
    "min_snr_gamma": "gamma of the min-SNR weighting",
    "schedule": "noise schedule, T = 1000",
}
CHOICES = {"timesteps": ["uniform", "stratified"], "schedule": ["linear", "cosine"],
           "loss_weighting": ["none", "min_snr"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ddpm_helpers.train", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="data", required=True)
    for name, recipe in RECIPES.items():
        p = sub.add_parser(name, help=f"train the {name} denoiser", formatter_class=parser.formatter_class)
        budget = p.add_argument_group("budget (training stops at whichever comes first)")
        budget.add_argument("--minutes", type=float, default=None, help="wall-clock minutes of training")
        budget.add_argument("--seconds", type=float, default=None, help="the same budget in seconds")
        budget.add_argument("--steps", type=int, default=None, help="optimizer steps")
        p.add_argument("--out", required=True, help="checkpoint file to write")
        p.add_argument("--seed", type=int, default=0, help="seeds the initial weights, batches, t and noise")
        p.add_argument("--device", default=None, help="cpu, cuda or mps; None picks the best available")
        p.add_argument("--threads", type=int, default=None, help="CPU threads; None keeps torch's choice")
        p.add_argument("--init", default=None, metavar="CHECKPOINT",
                       help="start from this checkpoint's (EMA) weights: one more warm-up + cosine cycle; "
                            "the architecture and schedule options must match it (with --conditional it may "
                            "be an unconditional file: its weights are loaded and the label embedding starts at zero)")
        p.add_argument("--conditional", action="store_true",
                       help="class-conditional model (num_classes: 10 digits, 2 moons) trained with label dropout, "
                            "for classifier-free guidance (ddpm_helpers.guidance)")
        p.add_argument("--label-dropout", type=float, default=0.1,
                       help="with --conditional: probability that a sample's label is replaced by the null label")
        p.add_argument("--label-lr-scale", type=float, default=1.0,
                       help="with --conditional: the learning rate of the classes' label embeddings, in multiples of "
                            "--lr (the null label's learns at --lr)")
        p.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        recipe_group = p.add_argument_group("recipe (learning rate: linear warm-up, then cosine decay to 0)")
        for key, help_text in RECIPE_HELP.items():
            recipe_group.add_argument("--" + key.replace("_", "-"), type=type(recipe[key]), default=recipe[key],
                                      choices=CHOICES.get(key), help=help_text)
        if name == "moons":
            p.add_argument("--hidden", type=int, default=recipe["hidden"], help="MLP width")
            p.add_argument("--depth", type=int, default=recipe["depth"], help="hidden layers")
            p.add_argument("--n-points", type=int, default=recipe["n_points"], help="training set size")
        else:
            p.add_argument("--channels", default=recipe["channels"],
                           help="U-Net widths, one per level (28, 14, 7 px; with --patch 2: 14, 7 px)")
            p.add_argument("--blocks", type=int, default=recipe["blocks"], help="residual blocks per level")
            p.add_argument("--patch", type=int, default=recipe["patch"],
                           help="fold p x p squares of pixels into channels before the first level (UNet(patch=p))")
            p.add_argument("--prediction", default=recipe["prediction"], choices=["eps", "x0"],
                           help="what the network's last layer predicts; x0: UNet(prediction='x0'), which returns "
                                "the eps it implies, so the loss and the samplers are unchanged")
            p.add_argument("--data-root", default=None,
                           help="folder holding MNIST/raw (full MNIST); default: load_mnist()'s choice")
    return parser


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    minutes = _budget(args)
    torch.manual_seed(args.seed)                       # the initial weights
    generator = torch.Generator().manual_seed(args.seed)
    if args.data == "moons":
        data = make_moons(args.n_points, generator=generator)
        labels = (torch.arange(args.n_points) >= args.n_points // 2).long()   # 0: upper moon, 1: lower moon
        model = MLPDenoiser(hidden=args.hidden, depth=args.depth, num_classes=2 if args.conditional else None)
        described = f"make_moons({args.n_points}, noise=0.05)"
    else:
        data, labels = load_mnist(train=True, root=args.data_root)
        channels = tuple(int(c) for c in args.channels.split(","))
        model = UNet(channels=channels, blocks=args.blocks, patch=args.patch,
                     num_classes=10 if args.conditional else None, prediction=args.prediction,
                     schedule=None if args.prediction == "eps" else getattr(NoiseSchedule, args.schedule)(T=1000))
        if 28 % model.size_multiple:
            raise SystemExit(
                f"--channels {args.channels} has {len(channels)} levels, which do not fit 28x28 MNIST with "
                f"--patch {args.patch}: pass --patch 1 for three widths (the shipped UNet(32, 64, 64), whose recorded "
                f"commands predate --patch) or two widths with --patch 2 (the default, e.g. --channels 32,64)")
        described = f"MNIST train, {data.shape[0]} images" + (" (full)" if data.shape[0] == 60_000 else "")
    schedule = getattr(NoiseSchedule, args.schedule)(T=1000)
    earlier, init_note = _initialize(model, schedule, args.init) if args.init else (None, None)
    print(f"training {type(model).__name__} ({model.num_parameters():,} parameters) on {described}, "
          f"budget: {minutes} min / {args.steps} steps, seed {args.seed}", flush=True)
    result = train(model, data, schedule, steps=args.steps, minutes=minutes, batch_size=args.batch_size,
                   lr=args.lr, warmup=args.warmup, lr_decay="cosine", grad_clip=args.grad_clip or None,
                   weight_decay=args.weight_decay, ema_decay=args.ema_decay,
                   timesteps=args.timesteps, loss_weighting=args.loss_weighting,
                   min_snr_gamma=args.min_snr_gamma, labels=labels if args.conditional else None,
                   label_dropout=args.label_dropout, label_lr_scale=args.label_lr_scale, generator=generator, device=args.device,
                   num_threads=args.threads, progress=not args.no_progress)
    provenance = dict(result.provenance, data=described, model_parameters=model.num_parameters(),
                      command="python -m ddpm_helpers.train " + shlex.join(argv),
                      explicit_command=_explicit_command(args, minutes),
                      final_loss=sum(result.losses[-100:]) / max(1, len(result.losses[-100:])))
    if earlier is not None:
        provenance.update(initialized_from=earlier, total_steps=earlier.get("total_steps", earlier["steps"])
                          + provenance["steps"], total_minutes=earlier.get("total_minutes", earlier["minutes"])
                          + provenance["minutes"])
    if init_note is not None:
        provenance["init_note"] = init_note
    path = save_checkpoint(args.out, result.model, schedule, provenance, half=args.half)
    print(f"done: {provenance['steps']} steps in {provenance['minutes']:.2f} min on {provenance['device']} "
          f"({provenance['machine']}), final loss {provenance['final_loss']:.4f}; wrote {path}", flush=True)
    return provenance


def _initialize(model, schedule, path) -> tuple[dict, str | None]:
    """Load `path` into `model` (same architecture, else a ValueError says what differs) and return
    its provenance, which the new checkpoint keeps as `initialized_from`, and a note when a
    conditional model started from an unconditional file (the only tensors not loaded)."""
    note = None
    file_config = read_checkpoint(path)["model_config"]
    file_prediction = file_config.get("prediction", "eps")
    if file_prediction != getattr(model, "prediction", "eps"):
        raise SystemExit(f"--init {path} holds a network that predicts {file_prediction}, but this one would predict "
                         f"{model.prediction}: pass --prediction {file_prediction} (the shipped mnist_unet predicts x0, "
                         f"mnist_unet_cond eps)")
    if getattr(model, "num_classes", None) is not None and "num_classes" not in file_config:
        loaded, loaded_schedule = load_checkpoint(path)
        zero = init_from_unconditional(model, loaded)     # strict=False for the label embedding only
        note = (f"conditional model started from the unconditional file {path}: every weight loaded from it "
                f"but {', '.join(zero)}, which started at zero (num_classes={model.num_classes})")
    else:
        loaded, loaded_schedule = load_checkpoint(path, model=model)
    if loaded_schedule.config != schedule.config:
        raise SystemExit(f"--init {path} was trained with the schedule {loaded_schedule.config}, "
                         f"not {schedule.config}: pass the matching --schedule")
    print(f"starting from {path}: {loaded.provenance.get('command', 'command not recorded')}", flush=True)
    if note is not None:
        print(note, flush=True)
    return dict(loaded.provenance), note


def _explicit_command(args, minutes: float | None) -> str:
    """The command with every recipe and architecture option written out, so that it reruns the
    same training after the defaults change."""
    keys = list(RECIPES[args.data])
    argv = [args.data] + [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in keys]
    if minutes is not None:
        argv.append(f"--minutes={minutes:g}")
    for key in ("steps", "out", "seed", "device", "threads", "init", "data_root"):
        if getattr(args, key, None) is not None:
            argv.append(f"--{key.replace('_', '-')}={getattr(args, key)}")
    argv += [flag for flag, on in (("--conditional", args.conditional), ("--half", args.half)) if on]
    if args.conditional:
        argv += [f"--label-dropout={args.label_dropout}", f"--label-lr-scale={args.label_lr_scale}"]
    return "python -m ddpm_helpers.train " + shlex.join(argv)


def _budget(args) -> float | None:
    if args.minutes is not None and args.seconds is not None:
        raise SystemExit("give --minutes or --seconds, not both")
    if args.minutes is None and args.seconds is None and args.steps is None:
        raise SystemExit("give a budget: --minutes M, --seconds S and/or --steps N")
    return args.seconds / 60 if args.seconds is not None else args.minutes


if __name__ == "__main__":
    main()
