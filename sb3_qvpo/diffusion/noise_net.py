"""The epsilon-prediction network eps(a_t, t, s) of the diffusion actor."""

import math

import torch as th
from torch import nn


def truncated_normal_init(module: nn.Module) -> None:
    """The release's init for every Linear: N(0, 1 / (2 sqrt(fan_in))) cut at 2 std, zero bias."""
    if isinstance(module, nn.Linear):
        std = 1.0 / (2.0 * math.sqrt(module.in_features))
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style [sin, cos] features of the step index, so nearby steps get nearby codes."""

    frequencies: th.Tensor

    def __init__(self, dim: int):
        super().__init__()
        if dim < 4 or dim % 2 != 0:
            raise ValueError(f"time_embedding_dim must be an even integer >= 4, got {dim!r}")
        half = dim // 2
        step = math.log(10000.0) / (half - 1)
        self.register_buffer("frequencies", th.exp(-step * th.arange(half, dtype=th.float32)), persistent=False)

    def forward(self, t: th.Tensor) -> th.Tensor:
        angles = t.float().unsqueeze(-1) * self.frequencies
        return th.cat([angles.sin(), angles.cos()], dim=-1)


class NoisePredictionNet(nn.Module):
    """
    MLP on concat(a_t, time features, state features) predicting the noise added to a_t.

    The time features are exposed separately (:meth:`embed_time`) because during sampling all
    rows share one step: the embedding is then computed on a single row and broadcast.
    """

    def __init__(
        self,
        action_dim: int,
        features_dim: int,
        net_arch: list[int],
        activation_fn: type[nn.Module] = nn.Mish,
        time_embedding_dim: int = 32,
        time_hidden_dim: int = 256,
    ):
        super().__init__()
        if len(net_arch) == 0:
            raise ValueError("The noise network needs at least one hidden layer in net_arch")
        self.action_dim = action_dim
        self.time_embedding_dim = time_embedding_dim
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(time_embedding_dim),
            nn.Linear(time_embedding_dim, time_hidden_dim),
            activation_fn(),
            nn.Linear(time_hidden_dim, time_embedding_dim),
        )
        layers: list[nn.Module] = []
        in_dim = action_dim + time_embedding_dim + features_dim
        for width in net_arch:
            layers += [nn.Linear(in_dim, width), activation_fn()]
            in_dim = width
        layers.append(nn.Linear(in_dim, action_dim))
        self.body = nn.Sequential(*layers)
        self.apply(truncated_normal_init)

    def embed_time(self, t: th.Tensor) -> th.Tensor:
        return self.time_mlp(t)

    def forward(self, noisy_action: th.Tensor, time_features: th.Tensor, features: th.Tensor) -> th.Tensor:
        if time_features.shape[0] != noisy_action.shape[0]:
            time_features = time_features.expand(noisy_action.shape[0], -1)
        return self.body(th.cat([noisy_action, time_features, features], dim=-1))
