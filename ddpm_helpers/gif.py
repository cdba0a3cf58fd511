"""Animations: a list of frames (or a stored sampler run) as a looping GIF, shown inline in Jupyter.

Frames use the same display mapping as every picture of the course (see viz.py):

    pixel = clamp((x + 1) / 2, 0, 1)          for display only; never rescaled per frame

so brightness means the same thing in the first frame (pure noise) as in the last (the sample).
Images are tiled with torchvision's make_grid and upscaled with nearest neighbour (no blur);
2-D point clouds are drawn with matplotlib (Agg, off screen) in a fixed window, the two-moons
manifold faintly behind. Encoding: imageio (Pillow plugin), loop forever, durations in ms.
"""
from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence

import imageio.v3 as iio
import numpy as np
from einops import repeat
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .viz import FINAL_LABEL, POINT_LIM, data_kind, draw_points, image_grid

MAX_WIDTH = 512  # px: the automatic enlargement keeps image GIFs at most this wide


def make_gif(frames, path: str | os.PathLike | None = None, fps: float = 10, hold_last: float = 1.0,
             labels: Sequence[str] | None = None, nrow: int = 8, scale: int | None = None,
             lim: float = POINT_LIM) -> bytes:
    """Encode frames as an animated GIF (loops forever); return its bytes and write `path` if given.

    frames: a list of tensors of one shape, in [-1, 1]: (B, 1 or 3, H, W) images, tiled `nrow` per
        row and enlarged `scale` times (None: the largest of 1, 2, 3 that keeps the width within
        512 px); or (B, 2) points, one scatter per frame. A trajectory from collect_trajectory also
        works: its x_t frames then the final sample, labelled "t = ...".
    labels: one text per frame drawn above it, e.g. [f"t = {t}" for t in ts].
    fps: frames per second; the last frame stays `hold_last` seconds (its own, longer duration).
    Size: noisy frames hardly compress (about one byte per pixel each): 16 digits in 40 frames
    make about 1 MB; thin long runs with collect_trajectory(..., every=k) first.
    Note: GIF timing has 10 ms steps, and identical consecutive frames are merged by the encoder
    (their durations add up), so a decoder may report fewer frames than you passed.
    """
    if isinstance(frames, Mapping) and "ts" in frames:
        frames, auto_labels = trajectory_frames(frames)
        labels = auto_labels if labels is None else labels
    if not isinstance(fps, (int, float)) or not math.isfinite(fps) or not 0 < fps <= 50:
        # browsers play frames shorter than 20 ms at 100 ms, so more than 50 fps would run slower
        raise ValueError(f"fps must be a number in (0, 50], got {fps!r}; 10 suits most runs")
    if not isinstance(hold_last, (int, float)) or not math.isfinite(hold_last) or hold_last < 0:
        raise ValueError(f"hold_last must be a number of seconds >= 0, got {hold_last!r}")
    pictures = render_frames(frames, labels=labels, nrow=nrow, scale=scale, lim=lim)
    frame_ms = 1000.0 / fps
    durations = [round(frame_ms)] * (len(pictures) - 1) + [round(max(frame_ms, 1000.0 * hold_last))]
    gif = iio.imwrite("<bytes>", np.stack(pictures), extension=".gif", plugin="pillow",
                      is_batch=True, duration=durations, loop=0)
    if path is not None:
        with open(path, "wb") as f:
            f.write(gif)
    return gif


def show_gif(gif: bytes | str | os.PathLike):
    """Display GIF bytes (or a .gif file) inline in Jupyter: an IPython Image of type image/gif."""
    from IPython.display import Image as IPythonImage

    if isinstance(gif, (str, os.PathLike)):
        with open(gif, "rb") as f:
            gif = f.read()
    if not isinstance(gif, (bytes, bytearray)) or not bytes(gif[:4]) == b"GIF8":
        raise TypeError("show_gif expects the bytes returned by make_gif (or the path of a .gif file), "
                        f"got {type(gif).__name__}")
    return IPythonImage(data=bytes(gif), format="gif")


def trajectory_frames(traj: Mapping) -> tuple[list[Tensor], list[str]]:
    """The x_t frames of a trajectory (then its final sample) with labels "t = 999", ..."""
    frames = list(traj["x_t"])
    labels = [f"t = {t}" for t in traj["ts"]]
    if traj.get("final") is not None:
        frames.append(traj["final"])
        labels.append(FINAL_LABEL.replace("$x_0$", "x0"))
    return frames, labels


def render_frames(frames: Sequence[Tensor], labels: Sequence[str] | None = None, nrow: int = 8,
                  scale: int | None = None, lim: float = POINT_LIM) -> list[np.ndarray]:
    """Frames as (H, W, 3) uint8 RGB arrays (grey images have three equal channels)."""
    if isinstance(frames, Tensor) or not isinstance(frames, Sequence) or len(frames) == 0:
        raise TypeError("frames must be a non-empty list of tensors (one per frame), "
                        f"got {type(frames).__name__}")
    kind = data_kind(frames[0], "frames[0]")
    for i, x in enumerate(frames):
        data_kind(x, f"frames[{i}]")
        if x.shape != frames[0].shape:
            raise ValueError(f"all frames must have one shape; frames[0] is {tuple(frames[0].shape)}, "
                             f"frames[{i}] is {tuple(x.shape)}")
    if labels is not None and len(labels) != len(frames):
        raise ValueError(f"got {len(labels)} labels for {len(frames)} frames; give one label per frame")
    if kind == "points":
        return _point_frames(frames, labels, lim)
    if scale is None:
        batch, _, _, width = frames[0].shape
        grid_width = min(nrow, batch) * (width + 2) + 2          # make_grid with padding 2
        scale = max(1, min(3, MAX_WIDTH // grid_width))
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive int (nearest-neighbour enlargement), got {scale!r}")
    pictures = [_image_frame(x, nrow, scale) for x in frames]
    if labels is not None:
        pictures = [_with_label(p, text) for p, text in zip(pictures, labels)]
    return pictures


def png_bytes(picture: np.ndarray) -> bytes:
    """Encode one rendered frame (uint8 array) as PNG bytes, e.g. for an ipywidgets.Image."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _image_frame(x: Tensor, nrow: int, scale: int) -> np.ndarray:
    grid = image_grid(x, nrow)              # (3, H, W) in [0, 1]; grey images repeated on 3 channels
    pixels = (grid * 255).round().byte()    # RGB even for grey: some readers cannot decode grey GIFs
    return repeat(pixels, "c h w -> (h sh) (w sw) c", sh=scale, sw=scale).numpy()


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)           # scalable font (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def _with_label(picture: np.ndarray, text: str) -> np.ndarray:
    """Put a white band with the label in black above the picture."""
    width = picture.shape[1]
    size = int(min(24, max(10, width // 14)))
    band = Image.new("RGB", (width, size + 8), "white")
    draw = ImageDraw.Draw(band)
    font = _font(size)
    left, _, right, _ = draw.textbbox((0, 0), str(text), font=font)
    draw.text((max(0, (width - (right - left)) // 2), 3), str(text), fill="black", font=font)
    return np.concatenate([np.asarray(band), picture], axis=0)


def _point_frames(frames: Sequence[Tensor], labels: Sequence[str] | None, lim: float) -> list[np.ndarray]:
    """One off-screen figure reused for every frame: only the points and the title change."""
    fig = Figure(figsize=(3.2, 3.4), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.07, 0.86, 0.83))
    draw_points(ax, frames[0], manifold=True, lim=lim)
    points = ax.collections[-1]
    title = ax.set_title("")
    pictures = []
    for i, x in enumerate(frames):
        points.set_offsets(x.detach().float().cpu().numpy())
        title.set_text("" if labels is None else str(labels[i]))
        canvas.draw()
        pictures.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return pictures
