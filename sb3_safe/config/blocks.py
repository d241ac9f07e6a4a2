"""Profile blocks as data: the zoo's string forms made mappings, and one block merged over another."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sb3_safe.errors import ConfigError
from sb3_safe.zoo import parse_literal_string, parse_policy_kwargs_string

__all__ = ["canonical_block", "merge"]


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """:return: ``base`` with ``top``'s keys over it, nested mappings merged key by key"""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def canonical_block(block: dict[str, Any], source: Path | str, name: str) -> dict[str, Any]:
    """Turn the zoo's string forms into mappings before blocks are merged."""
    out = dict(block)
    where = f"{source} [{name}]"
    try:
        if isinstance(out.get("policy_kwargs"), str):
            out["policy_kwargs"] = parse_policy_kwargs_string(out["policy_kwargs"])
        if isinstance(out.get("normalize"), str) and out["normalize"].strip().startswith("{"):
            out["normalize"] = parse_literal_string(out["normalize"], "normalize")
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    if out.get("normalize") is True:
        out["normalize"] = {}
    return out
