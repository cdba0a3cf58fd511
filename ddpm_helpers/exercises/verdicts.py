"""What every exercise check shares: one verdict line, the student's function run under watch,
and comparisons that name the classic mistake a wrong result equals.

A check calls `run_check(name, body)`; the body returns the "passed" message or raises `Verdict`
with the diagnosis. The student's function is only ever called through `call`, which turns its
exceptions into one line and watches which functions it enters: a check names the package
functions that compute its answer (`delegates`), and a student's function that reaches one of
them, under whatever name or alias, fails with "call your own math: this function calls
ddpm_helpers.q_sample". The watch is `sys.settrace` on the code objects of those functions, so
it sees through imports, aliases, closures and wrappers; it is on only while the student's
function runs, never during the check's own reference computations.
"""
from __future__ import annotations

import inspect
import re
import sys
from contextlib import contextmanager
from types import CodeType

import torch
from torch import Tensor

from ..schedules import NoiseSchedule

ATOL, RTOL = 1e-4, 1e-4
ALPHA = "did you use ᾱ_t or α_t? ᾱ_t = schedule.alpha_bars[t] is the product of all α_s up to t"
ROOTS = "did you forget the square roots? The coefficients are √ᾱ and √(1 − ᾱ), not ᾱ and 1 − ᾱ"
END = ("at s = −1 (the clean data) ᾱ is 1: alpha_bars[-1] is the LAST entry ᾱ_{T-1} ≈ 0, "
       "Python's negative indexing")


class Verdict(BaseException):
    """Ends a check with one message. A BaseException, so that an `except Exception` in the
    student's code cannot swallow one raised inside it (by a hook on the model it was given)."""


class _Delegated(BaseException):
    """Raised where the student's function enters a package function that computes the answer."""


def run_check(name: str, body) -> bool:
    """Run one check body, print `name: verdict` and return whether it passed."""
    try:
        message = body()
    except Verdict as verdict:
        print(f"{name}: {verdict}")
        return False
    except Exception as err:  # a bug in the check itself, or a result it cannot handle
        print(f"{name}: could not check your result ({one_line(err)})")
        return False
    print(f"{name}: {message}")
    return True


def one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}" if text else type(err).__name__


def code_objects(delegates: dict[str, list]) -> dict[CodeType, str]:
    """{code object: the name to show} for the functions (or methods) in `delegates`; decorators
    such as torch.no_grad are seen through (their wrapper's code is shared by every wrapped function)."""
    return {inspect.unwrap(function).__code__: name
            for name, functions in delegates.items() for function in functions}


@contextmanager
def watching(codes: dict[CodeType, str]):
    """Yield a list that records the first watched function entered (and stop it there)."""
    entered: list[str] = []

    def trace(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            entered.append(codes[frame.f_code])
            raise _Delegated(codes[frame.f_code])  # also switches the trace off (CPython's rule)

    previous = sys.gettrace()
    sys.settrace(trace if codes else previous)
    try:
        yield entered
    finally:
        sys.settrace(previous)


def call(fn, *args, delegates: dict[CodeType, str] | None = None, **kwargs):
    """Call the student's function; turn its exceptions and its delegation into verdicts."""
    entered: list[str] = []
    try:
        with watching(delegates or {}) as entered:
            result = fn(*args, **kwargs)
    except _Delegated:
        result = None
    except NotImplementedError as err:
        if not entered and not str(err):  # the stub's bare raise; torch's own say what is unsupported
            raise Verdict("not implemented yet") from None
        if not entered:
            raise Verdict(f"your function raised {one_line(err)}") from None
    except Verdict:
        raise
    except Exception as err:
        if not entered:
            raise Verdict(f"your function raised {one_line(err)}{_hint(err)}") from None
    if entered:  # checked last: a bare `except:` in the student's code may have swallowed the stop
        raise Verdict(f"call your own math: this function calls {entered[0]}")
    return result


def _hint(err: Exception) -> str:
    text = str(err)
    if "must match the size of tensor" in text:
        return " (a per-sample coefficient of shape (B,) needs reshaping to (B, 1, ...) to broadcast)"
    index = re.search(r"index (-?\d+) is out of bounds for dimension 0 with size (\d+)", text)
    if index and int(index[1]) == int(index[2]):
        return (f" (indices run 0 … {int(index[2]) - 1}: code timesteps t = 0 … T − 1 are the paper's 1 … T, "
                "and torch.randint(0, T, ...) excludes T)")
    return ""


def shape_text(shape, batch: int | None) -> str:
    dims = [str(d) for d in shape]
    if batch is not None and dims and shape[0] == batch:
        dims[0] = "B"
    return "()" if not dims else f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def expect_tensor(out, like: Tensor, batch: int | None, what: str = "a tensor", hint: str = "") -> Tensor:
    """Type and shape of a result; returns it as float32 on the CPU, detached (NaN allowed:
    `compare` names the mistakes that produce NaN before it complains about them)."""
    if not isinstance(out, Tensor):
        raise Verdict(f"returned {type(out).__name__}, expected {what} of shape {shape_text(like.shape, batch)}")
    if out.shape != like.shape:
        raise Verdict(f"shape is {shape_text(out.shape, batch)}, expected {shape_text(like.shape, batch)}{hint}")
    if not out.is_floating_point():
        raise Verdict(f"dtype is {out.dtype}, expected a floating-point tensor")
    return out.detach().float().cpu()


def close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.float(), b.float(), atol=ATOL, rtol=RTOL, equal_nan=True))


def _worst(out: Tensor, ref: Tensor, labels) -> tuple[str, float]:
    """The label of the row (sample) where out and ref differ most, and that difference."""
    err = (out - ref).abs().nan_to_num(nan=float("inf")).reshape(len(labels), -1).max(dim=1).values
    i = int(err.argmax())
    return str(labels[i]), float(err[i])


def _first_wrong(wrong: Tensor, ref: Tensor, labels) -> str:
    """The label of the first row (the largest t comes first) at which a wrong variant differs from ref."""
    rows = [i for i in range(len(labels)) if not close(wrong[i], ref[i])]
    return str(labels[rows[0] if rows else 0])


def compare(out: Tensor, ref: Tensor, labels, variants, hint: str, where: str = "t = ") -> None:
    """Raise a verdict unless out equals ref: name the first wrong variant that out equals.
    `labels` names each row (sample) of out, e.g. its timestep, in the order a sampler meets
    them; None for whole-run results. Variants that do not apply are None."""
    if close(out, ref):
        return
    at = (lambda rows: "") if labels is None else (lambda rows: f" at {where}{rows}")
    for wrong, message in variants:
        if wrong is not None and close(out, wrong):
            raise Verdict(f"values differ{at(_first_wrong(wrong, ref, labels) if labels else '')}: {message}")
    if not bool(torch.isfinite(out).all()):
        rows = "" if labels is None else at(_worst(out, ref, labels)[0])
        raise Verdict(f"returned NaN or infinite values{rows}; {hint}")
    if labels is None:
        raise Verdict(f"values differ (largest error {(out - ref).abs().max():.3g}); {hint}")
    label, err = _worst(out, ref, labels)
    raise Verdict(f"values differ at {where}{label} (largest error {err:.3g}); {hint}")


def randn(*shape, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def coefs(schedule: NoiseSchedule, t: Tensor, ndim: int) -> dict[str, Tensor]:
    """The schedule's tables at t (B,), shaped (B, 1, ...) to broadcast against data of `ndim` dims."""
    names = ("alpha_bars", "alphas", "alpha_bars_prev", "betas", "posterior_variance")
    return {n: NoiseSchedule.gather(getattr(schedule, n), t, ndim) for n in names}


def alpha_bar_at(schedule: NoiseSchedule, s) -> Tensor:
    """ᾱ_s in float64 for an int or LongTensor s >= -1, with ᾱ_{-1} = 1 (the clean data)."""
    table = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bars.double()])
    return table[torch.as_tensor(s) + 1]
