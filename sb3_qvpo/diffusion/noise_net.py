"""The epsilon-prediction network eps(a_t, t, s) of the diffusion actor."""

import math
from collections.abc import Callable

import torch as th
from torch import nn


def truncated_normal_init(module: nn.Module) -> None:
    """The release's init for every Linear: N(0, 1 / (2 sqrt(fan_in))) cut at 2 std, zero bias."""
    if isinstance(module, nn.Linear):
        std = 1.0 / (2.0 * math.sqrt(module.in_features))
        nn.init.trunc_normal_(module.weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def release_normal_init(module: nn.Module) -> None:
    """
    What QVPO's release (and DIPO's code) actually runs for every Linear: N(0, 1 / (2 sqrt(fan_in))),
    *untruncated* (its truncation loop rebinds a local name and never writes back), zero bias.
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=1.0 / (2.0 * math.sqrt(module.in_features)))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def xavier_uniform_init(module: nn.Module) -> None:
    """QSM's (jaxrl5 ``default_init``, flax's zero bias) for every Linear."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def pytorch_default_init(module: nn.Module) -> None:
    """Keep ``nn.Linear``'s own init (Kaiming-uniform weights, uniform bias): Diffusion-QL's, which sets none."""


WEIGHT_INITS = {
    "truncated_normal": truncated_normal_init,
    "normal": release_normal_init,
    "xavier_uniform": xavier_uniform_init,
    "pytorch_default": pytorch_default_init,
}


def get_weight_init(name: str) -> Callable[[nn.Module], None]:
    try:
        return WEIGHT_INITS[name]
    except KeyError:
        raise ValueError(f"Unknown weight_init {name!r}: expected one of {tuple(WEIGHT_INITS)}") from None


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


class LearnableFourierTimeEmbedding(nn.Module):
    """
    QSM's time features (jaxrl5 ``FourierFeatures(learnable=True)``): [cos, sin] of 2 pi t w, with
    ``dim / 2`` learned frequencies w initialised from N(0, 0.2^2).
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim < 2 or dim % 2 != 0:
            raise ValueError(f"time_embedding_dim must be an even integer >= 2, got {dim!r}")
        self.kernel = nn.Parameter(0.2 * th.randn(dim // 2, 1))

    def forward(self, t: th.Tensor) -> th.Tensor:
        angles = 2.0 * math.pi * t.float().unsqueeze(-1) @ self.kernel.t()
        return th.cat([angles.cos(), angles.sin()], dim=-1)


TIME_EMBEDDINGS: dict[str, Callable[[int], nn.Module]] = {
    "sinusoidal": SinusoidalTimeEmbedding,
    "fourier": LearnableFourierTimeEmbedding,
}


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
        time_features_dim: int | None = None,
        time_embedding: str = "sinusoidal",
        weight_init: str = "truncated_normal",
    ):
        """
        :param time_embedding: "sinusoidal" (QVPO's release, DIPO) or "fourier" (QSM's learned frequencies)
        :param time_features_dim: output size of the time MLP (None: ``time_embedding_dim``, as in
            the release; QSM: 128)
        :param weight_init: "truncated_normal" (the release's intent), "normal" (what the release runs),
            "xavier_uniform" (QSM's) or "pytorch_default" (Diffusion-QL's)
        """
        super().__init__()
        if len(net_arch) == 0:
            raise ValueError("The noise network needs at least one hidden layer in net_arch")
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(f"Unknown time_embedding {time_embedding!r}: expected one of {tuple(TIME_EMBEDDINGS)}")
        init = get_weight_init(weight_init)
        self.action_dim = action_dim
        self.time_embedding_dim = time_embedding_dim
        self.time_features_dim = time_embedding_dim if time_features_dim is None else time_features_dim
        self.time_mlp = nn.Sequential(
            TIME_EMBEDDINGS[time_embedding](time_embedding_dim),
            nn.Linear(time_embedding_dim, time_hidden_dim),
            activation_fn(),
            nn.Linear(time_hidden_dim, self.time_features_dim),
        )
        layers: list[nn.Module] = []
        in_dim = action_dim + self.time_features_dim + features_dim
        for width in net_arch:
            layers += [nn.Linear(in_dim, width), activation_fn()]
            in_dim = width
        layers.append(nn.Linear(in_dim, action_dim))
        self.body = nn.Sequential(*layers)
        self.apply(init)

    def embed_time(self, t: th.Tensor) -> th.Tensor:
        return self.time_mlp(t)

    def forward(self, noisy_action: th.Tensor, time_features: th.Tensor, features: th.Tensor) -> th.Tensor:
        if time_features.shape[0] != noisy_action.shape[0]:
            time_features = time_features.expand(noisy_action.shape[0], -1)
        return self.body(th.cat([noisy_action, time_features, features], dim=-1))
