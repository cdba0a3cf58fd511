"""Checks for the exercise notebook (06): each runs a student's function on small seeded cases
against an exact reference, prints ONE friendly verdict line and returns True or False.

Verdicts, in the order they are tried:
    "not implemented yet"                     the function still raises NotImplementedError
    "call your own math: this function calls ddpm_helpers.q_sample"
                                              it reaches the package's own answer (see verdicts.py)
    "your function raised ValueError: ..."    any other exception, in one line (never a traceback)
    "returned list, expected a tensor ..."    wrong type; "shape is (B, 2), expected (B, 1, 28, 28)"
    "values differ at t = 999: did you use ᾱ_t or α_t? ..."   the result equals a known wrong
                                              variant (α_t for ᾱ_t, ᾱ_{t-1}, no square roots,
                                              alpha_bars[-1] for ᾱ = 1, a one-step formula for a jump, ...)
    "values differ at t = 500 (largest error 0.3): ..."       any other wrong value
    "passed"
The training-loop check diagnoses by behaviour instead (see training.py). Graders use the
returned bool (or nbgrader's hidden `assert`s in the solutions notebook).
Notation as in `diffusion.py`: code t = 0 ... T-1 is the paper's 1 ... T; ᾱ_{-1} = 1.
"""
from .forward import (check_forward_jump, check_loss_per_sample, check_noisy_copies, check_posterior,
                      check_signal_loss, check_time_embedding)
from .sampling import check_ancestral_step, check_ddim_step, check_filmstrip, check_skip_ddim
from .training import check_training_loop

__all__ = [
    "check_ancestral_step", "check_ddim_step", "check_filmstrip", "check_forward_jump", "check_loss_per_sample",
    "check_noisy_copies", "check_posterior", "check_signal_loss", "check_skip_ddim", "check_time_embedding",
    "check_training_loop",
]
