"""
:class:`CentralizedCriticPolicy`: MAPPO's actor-critic, an actor on the agent's own observation
and a critic on the global state, built from SB3's parts.

The observation is a ``Dict`` with ``obs`` (the agent's own) and ``state`` (the global state),
as :class:`~sb3_safe.multiagent.PettingZooVecEnv` makes it with ``centralized_critic``. The
policy is SB3's ``MultiInputActorCriticPolicy`` with separate features extractors
(``share_features_extractor=False``): the actor's reads only ``obs``, the critic's only
``state``, and the MLP extractor's value branch is sized for the state. Everything else is
SB3's: ``save``/``load``, ``predict``, rollout buffers, value normalization and the critic
learning rate's parameter group (the value branch is ``mlp_extractor.value_net`` as usual).

Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games"
(https://arxiv.org/abs/2103.01955).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from torch import nn

__all__ = ["ACTOR_KEY", "CRITIC_KEY", "CentralizedCriticPolicy", "KeyExtractor"]

#: The observation key the actor reads, and the one the critic reads
ACTOR_KEY, CRITIC_KEY = "obs", "state"


class KeyExtractor(BaseFeaturesExtractor):
    """
    Flatten one entry of a ``Dict`` observation and ignore the others.

    :param observation_space: The ``Dict`` observation space
    :param key: The entry to read
    """

    def __init__(self, observation_space: spaces.Dict, key: str = ACTOR_KEY) -> None:
        super().__init__(observation_space, get_flattened_obs_dim(observation_space[key]))
        self.key = key
        self.flatten = nn.Flatten()

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        features: th.Tensor = self.flatten(observations[self.key])
        return features


class CentralizedCriticPolicy(MultiInputActorCriticPolicy):
    """
    An actor that sees ``obs`` and a critic that sees ``state``.

    Takes every argument of :class:`~stable_baselines3.common.policies.MultiInputActorCriticPolicy`;
    ``features_extractor_class`` and ``share_features_extractor`` are set by the policy
    (a :class:`KeyExtractor` each, not shared). :meth:`predict` also takes the agent's own
    observation alone (an array instead of a dict): acting needs no global state.
    """

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Space[Any], *args: Any, **kwargs: Any) -> None:
        kwargs.update(features_extractor_class=KeyExtractor, share_features_extractor=False)
        kwargs.pop("features_extractor_kwargs", None)
        super().__init__(observation_space, action_space, *args, **kwargs)

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        # ActorCriticPolicy asks twice without sharing: first for the actor (features_extractor is
        # still None), then for the critic.
        key = ACTOR_KEY if self.features_extractor is None else CRITIC_KEY
        assert isinstance(self.observation_space, spaces.Dict)
        return KeyExtractor(self.observation_space, key)

    def _build_mlp_extractor(self) -> None:
        """SB3's MlpExtractor with the value branch built for the critic's (larger) input."""
        actor = MlpExtractor(self.pi_features_extractor.features_dim, self.net_arch, self.activation_fn, device=self.device)
        critic = MlpExtractor(self.vf_features_extractor.features_dim, self.net_arch, self.activation_fn, device=self.device)
        actor.value_net, actor.latent_dim_vf = critic.value_net, critic.latent_dim_vf
        self.mlp_extractor = actor

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        :param observation: ``{"obs": ..., "state": ...}``, or the agent's own observation(s) alone
        :return: The actions and ``None`` (no recurrent state), as SB3's ``predict``
        """
        if not isinstance(observation, dict):
            observation = self.actor_observation(observation)
        return super().predict(observation, state, episode_start, deterministic)

    def actor_observation(self, own: np.ndarray) -> dict[str, np.ndarray]:
        """:return: ``own`` with a zero global state beside it (the actor never reads it)"""
        assert isinstance(self.observation_space, spaces.Dict)
        obs_shape = self.observation_space[ACTOR_KEY].shape
        state_shape = self.observation_space[CRITIC_KEY].shape
        assert obs_shape is not None and state_shape is not None
        own = np.asarray(own, dtype=np.float32)
        batch = own.shape[: own.ndim - len(obs_shape)]
        return {ACTOR_KEY: own, CRITIC_KEY: np.zeros((*batch, *state_shape), dtype=np.float32)}
