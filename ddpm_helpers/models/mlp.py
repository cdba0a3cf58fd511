"""MLPDenoiser: the eps-prediction network for 2-D point clouds (two moons).

eps_theta(x_t, t) = MLP([x_t, e(t)])   with e(t) the sinusoidal embedding of the timestep;
eps_theta(x_t, t, c) = MLP([x_t, e(t) + l(c)])   with a learned label embedding l (num_classes=...).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import SinusoidalEmbedding, check_timesteps
from .labels import LabelEmbedding


class MLPDenoiser(nn.Module):
    """Predict the noise eps in x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for points.

    The point x_t (B, data_dim) is concatenated with the embedding of t (B, time_dim) and passed
    through `depth` hidden layers of width `hidden` with SiLU activations; a last linear layer
    returns eps of the shape of x_t. num_classes (an int) makes it class-conditional, as UNet's.
    `config` holds the keyword arguments that rebuild the model.
    """

    def __init__(self, hidden: int = 128, depth: int = 3, time_dim: int = 32, data_dim: int = 2,
                 num_classes: int | None = None):
        super().__init__()
        for name, value, low in (("hidden", hidden, 1), ("depth", depth, 1), ("data_dim", data_dim, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.config = dict(hidden=hidden, depth=depth, time_dim=time_dim, data_dim=data_dim)
        if num_classes is not None:
            self.config["num_classes"] = num_classes
        self.data_dim, self.num_classes = data_dim, num_classes
        self.time_embedding = SinusoidalEmbedding(time_dim)
        layers: list[nn.Module] = [nn.Linear(data_dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, data_dim))
        self.net = nn.Sequential(*layers)
        self.label_embedding = LabelEmbedding(num_classes, time_dim) if num_classes is not None else None

    def forward(self, x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        if x_t.ndim != 2 or x_t.shape[1] != self.data_dim:
            raise ValueError(
                f"x_t must have shape (B, {self.data_dim}) (a batch of points), got {tuple(x_t.shape)}"
            )
        t = check_timesteps(t, batch=x_t.shape[0])
        emb = self.time_embedding(t).to(x_t.dtype)
        if self.label_embedding is not None:
            emb = emb + self.label_embedding(labels, x_t.shape[0])
        elif labels is not None:
            raise ValueError("this MLPDenoiser is unconditional (built without num_classes) but got labels; "
                             "build MLPDenoiser(..., num_classes=2) and train it with labels, or drop the labels")
        return self.net(torch.cat([x_t, emb], dim=1))

    def num_parameters(self) -> int:
        """The number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

