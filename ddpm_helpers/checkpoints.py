"""Checkpoints: one file holding the EMA weights, what rebuilds model and schedule, and provenance.

File layout (a dict, read back with torch.load(weights_only=True), so no code is ever unpickled):
    format, version                 "ddpm_helpers.checkpoint", 1
    model_class, model_config       e.g. "UNet", {"channels": (32, 64, 64), ...}  ->  UNet(**config)
                                    (class-conditional models: num_classes in the config)
    state_dict                      the weights (float32, or float16 when saved with half=True)
    schedule                        schedule.config, e.g. {"kind": "linear", "T": 1000, ...}
    provenance                      data, steps, seed, minutes, machine, command ...
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from .models import MODELS
from .schedules import NoiseSchedule

FORMAT, VERSION = "ddpm_helpers.checkpoint", 1
PRETRAINED = {"moons_mlp": "moons_mlp.pt", "mnist_unet": "mnist_unet.pt", "mnist_unet_cond": "mnist_unet_cond.pt"}
_KEYS = ("model_class", "model_config", "state_dict", "schedule", "provenance")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, schedule: NoiseSchedule,
                    provenance: dict | None = None, half: bool = False) -> Path:
    """Write model weights + the config that rebuilds model and schedule + provenance to `path`.

    half=True stores floating-point weights as float16 (half the size); loading restores float32.
    """
    name = type(model).__name__
    if MODELS.get(name) is not type(model) or not isinstance(getattr(model, "config", None), dict):
        raise TypeError(f"can only save the package's models {sorted(MODELS)} (they carry a `config`), got {name}")
    if schedule.config.get("kind") not in ("linear", "cosine"):
        raise ValueError(f"schedule of kind {schedule.kind!r} cannot be rebuilt from its config; "
                         "use NoiseSchedule.linear(...) or NoiseSchedule.cosine(...)")
    _check_plain(provenance or {}, "provenance")
    dtype = torch.float16 if half else torch.float32
    state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    payload = dict(format=FORMAT, version=VERSION, model_class=name, model_config=dict(model.config),
                   state_dict=state, schedule=dict(schedule.config), provenance=dict(provenance or {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict (weights, configs, provenance), validated; see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}; check the path (train one with "
                                "`python -m ddpm_helpers.train ...` or use load_pretrained)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ValueError(f"{str(path)!r} is not a readable ddpm_helpers checkpoint (corrupt, truncated, "
                         f"or not saved by save_checkpoint): {type(error).__name__}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is a torch file but not a ddpm_helpers checkpoint "
                         f"(expected a dict with format={FORMAT!r}); save it with save_checkpoint")
    missing = [key for key in _KEYS if key not in payload]
    if missing or payload.get("version") != VERSION:
        raise ValueError(f"checkpoint {str(path)!r} lacks {missing} or has version "
                         f"{payload.get('version')!r} (expected {VERSION}); re-save it with this version")
    return payload


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None,
                    device: torch.device | str = "cpu") -> tuple[nn.Module, NoiseSchedule]:
    """Rebuild (model, schedule) from a checkpoint, weights in float32, model in eval mode.

    Pass `model` to load into your own instance: it must be the same class with the same config,
    else a ValueError says what differs. The provenance dict is attached as `model.provenance`.
    """
    payload = read_checkpoint(path)
    name, config = payload["model_class"], payload["model_config"]
    if name not in MODELS:
        raise ValueError(f"checkpoint holds an unknown architecture {name!r}; known: {sorted(MODELS)}")
    if model is None:
        model = MODELS[name](**config)
    elif type(model).__name__ != name or getattr(model, "config", None) != config:
        raise ValueError(f"architecture mismatch: the checkpoint holds {name}({_fmt(config)}) but the model "
                         f"is {type(model).__name__}({_fmt(getattr(model, 'config', {}))}); "
                         f"differs in: {_diff(config, getattr(model, 'config', {}))}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    _check_state(state, model.state_dict(), name)
    model.load_state_dict(state)
    model.provenance = payload["provenance"]
    return model.to(device).eval(), NoiseSchedule.from_config(payload["schedule"]).to(device)


def load_pretrained(name: str) -> tuple[nn.Module, NoiseSchedule]:
    """The (model, schedule) shipped with the package, on the CPU in eval mode, offline.

    "moons_mlp": MLPDenoiser for the two moons; "mnist_unet": UNet for 28x28 MNIST digits;
    "mnist_unet_cond": the class-conditional UNet (num_classes=10; model(x_t, t, labels), see
    ddpm_helpers.guidance), fine-tuned from "mnist_unet" with label dropout.
    `model.provenance` says how each was trained (command, minutes, machine).
    """
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; available: {sorted(PRETRAINED)}")
    asset = resources.files("ddpm_helpers") / "assets" / PRETRAINED[name]
    if not asset.is_file():
        raise FileNotFoundError(f"the shipped weights {PRETRAINED[name]} are missing from the installed "
                                "package; reinstall ddpm_helpers (pip install -r requirements.txt)")
    with resources.as_file(asset) as file:
        return load_checkpoint(file)


def _check_state(state: dict, expected: dict, name: str) -> None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"the weights do not fit {name}: missing {missing[:5]}, unexpected {extra[:5]}, "
                         f"shape differences {shapes[:5]}")


def _check_plain(value, where: str) -> None:
    """Raise unless value holds only what torch.load(weights_only=True) reads back."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif value is not None and type(value) not in (str, int, float, bool):
        raise TypeError(f"{where} is a {type(value).__name__}; checkpoints store only str, int, float, "
                        "bool, None, lists and dicts (convert it, e.g. with str())")


def _fmt(config: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return "; ".join(f"{k}: checkpoint {a.get(k, '<absent>')!r} vs model {b.get(k, '<absent>')!r}"
                     for k in keys if a.get(k) != b.get(k)) or "the class"
