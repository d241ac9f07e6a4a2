"""
Profiles: per-environment YAML blocks (rl-baselines3-zoo's format), found by name or path, read
with ``yaml.safe_load``, merged over ``default:`` and overridden by ``--set``.

A profile is a YAML file with one block per environment id and an optional ``default:``
block; the environment's block is merged over ``default`` (mappings such as
``policy_kwargs`` key by key). ``safe`` and ``baseline`` name the files shipped with the
package (the repository's ``hyperparams/`` folder, installed as ``sb3_safe/hyperparams``);
any path to a file in the same format works too, rl-baselines3-zoo's ``ppo.yml`` included.
Nothing in them is evaluated.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sb3_safe.config.blocks import canonical_block, merge
from sb3_safe.config.checks import check_keys, validate
from sb3_safe.config.train_config import TrainConfig
from sb3_safe.errors import ConfigError, did_you_mean

#: Where values given with ``--set`` and ``--timesteps`` come from, in errors
COMMAND_LINE = "command line (--set)"
#: Id prefixes whose environments share a family block (``vmas:``) in a profile
FAMILY_PREFIXES = ("vmas", "pettingzoo")

__all__ = [
    "BUNDLED_HYPERPARAMS",
    "PROFILE_DIRS",
    "canonical_block",
    "family_block",
    "find_profile",
    "load_config",
    "merge",
    "parse_overrides",
]


def _bundled_hyperparams() -> Path:
    installed = Path(__file__).resolve().parent.parent / "hyperparams"  # a wheel: sb3_safe/hyperparams
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent.parent / "hyperparams"  # a source tree


#: The profiles and search spaces shipped with sb3-safe (``safe.yml``, ``baseline.yml``, ``spaces/``).
BUNDLED_HYPERPARAMS = _bundled_hyperparams()

#: Where profile names (``safe``, ``baseline``) are looked up: the profiles shipped with the package,
#: then ``$SB3_SAFE_HYPERPARAMS``. A path to a YAML file is used as it is.
PROFILE_DIRS: list[Path] = [
    BUNDLED_HYPERPARAMS,
    *([Path(os.environ["SB3_SAFE_HYPERPARAMS"])] if os.environ.get("SB3_SAFE_HYPERPARAMS") else []),
]


#: ``algo:`` -> algorithm class: sb3-safe's classes and the SB3 / sb3-contrib classes they extend.
def find_profile(profile: str) -> Path:
    """
    :param profile: A profile name (``safe``) or a path to a YAML file
    :return: The file
    """
    path = Path(profile).expanduser()
    if path.suffix in (".yml", ".yaml") or os.sep in profile:
        if path.is_file():
            return path
        raise ConfigError(f"profile file {profile!r} does not exist. Pass an existing YAML file or a name such as 'safe'")
    for folder in PROFILE_DIRS:
        for suffix in (".yml", ".yaml"):
            if (folder / f"{profile}{suffix}").is_file():
                return folder / f"{profile}{suffix}"
    names = sorted({p.stem for folder in PROFILE_DIRS if folder.is_dir() for p in folder.glob("*.y*ml")})
    raise ConfigError(
        f"unknown profile {profile!r}.{did_you_mean(profile, names)} Available: {', '.join(names) or 'none'} "
        f"(in {', '.join(map(str, PROFILE_DIRS))}); or pass a path to a YAML file"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}. Fix the file's syntax") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read profile: {error.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a profile is a mapping of environment ids to blocks, got {type(data).__name__}")
    return data


def load_config(profile: str, env_id: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """
    Read a profile and validate the block for ``env_id``: merged over its family's block (``vmas:`` for
    ``vmas:<scenario>``), itself merged over ``default``.

    :param profile: Profile name or path
    :param env_id: Environment id; for ``module:EnvId-v0`` the block may be keyed by either form
    :param overrides: Values that replace the profile's (``--set``, ``--timesteps``), validated alike
    :return: The validated configuration
    """
    source = find_profile(profile)
    data = _read_yaml(source)
    short_id = env_id.split(":")[-1]
    key = env_id if env_id in data else short_id
    if key not in data and "default" not in data:
        envs = [k for k in data if isinstance(data[k], dict)]
        raise ConfigError(
            f"{source}: no block for {env_id!r} and no `default:` block.{did_you_mean(short_id, envs)} "
            f"Blocks: {', '.join(envs)}. Add a block for {short_id} or a default"
        )
    block: dict[str, Any] = {}
    used = [name for name in ("default", family_block(env_id), key) if name is not None and name in data]
    for name in used:
        part = data.get(name) or {}
        if not isinstance(part, dict):
            raise ConfigError(f"{source} [{name}]: a block is a mapping of keys to values, got {part!r}")
        block = merge(block, canonical_block(part, source, name))
    if overrides:
        given = canonical_block(dict(overrides), COMMAND_LINE, env_id)
        check_keys(given, f"{COMMAND_LINE} [{env_id}]")  # a bad --set value is the command line's, not the profile's
        block = merge(block, given)
        used.append(COMMAND_LINE)
    values = validate(block, source, env_id)
    return TrainConfig(env_id=env_id, profile=profile, source=source, values=values, blocks=tuple(used))


def family_block(env_id: str) -> str | None:
    """
    The block every environment of a family starts from, between ``default`` and its own: ``vmas:`` for
    ``vmas:<scenario>``, ``pettingzoo:`` for ``pettingzoo:<module>`` (``None`` for a Gymnasium id).
    """
    prefix, sep, _ = env_id.partition(":")
    return f"{prefix}:" if sep and prefix in FAMILY_PREFIXES else None


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """
    Parse ``KEY=VALUE`` strings (``--set``); values are YAML (``3e-4``, ``[64, 64]``, ``null``).

    Dotted keys reach into mappings: ``policy_kwargs.log_std_init=-1``.

    :param items: The strings
    :return: A nested mapping
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learning_rate=1e-4")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML; quote strings, e.g. --set policy=MlpPolicy"
            ) from None
        target = result
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return result
