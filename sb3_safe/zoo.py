"""
rl-baselines3-zoo compatibility: the string forms its ``hyperparams/*.yml`` files use.

The zoo ``eval``s strings such as ``"dict(log_std_init=-2, activation_fn=nn.ReLU)"``.
Here they are parsed with :mod:`ast` and only literals, ``dict(...)`` calls and a fixed
list of names are accepted; nothing in a configuration file is ever executed.
"""

from __future__ import annotations

import ast
from typing import Any

from sb3_safe.errors import ConfigError

__all__ = ["parse_literal_string", "parse_policy_kwargs_string"]

# Prefixes under which the zoo writes torch classes: nn.ReLU, th.nn.ReLU, torch.nn.ReLU, th.optim.Adam
_MODULE_PREFIXES = ("torch.nn.", "th.nn.", "nn.", "torch.optim.", "th.optim.", "optim.")


def _name_of(node: ast.expr) -> str | None:
    """``nn.ReLU`` -> ``"nn.ReLU"``; anything that is not a dotted name -> ``None``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _name_of(node.value)
        return None if parent is None else f"{parent}.{node.attr}"
    return None


def _convert(node: ast.expr, source: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _convert(node.operand, source)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_convert(item, source) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ConfigError(f"cannot parse {source!r}: `**` unpacking is not supported; write the keys out")
        return {
            _convert(key, source): _convert(value, source) for key, value in zip(node.keys, node.values, strict=True) if key
        }
    if isinstance(node, ast.Call) and _name_of(node.func) == "dict" and not node.args:
        if any(kw.arg is None for kw in node.keywords):
            raise ConfigError(f"cannot parse {source!r}: `**` unpacking is not supported; write the keys out")
        return {kw.arg: _convert(kw.value, source) for kw in node.keywords}
    name = _name_of(node)
    if name is not None and name.startswith(_MODULE_PREFIXES):
        # A class reference (activation, optimizer): kept as its name, resolved from a fixed list later.
        return name
    raise ConfigError(
        f"cannot parse {source!r}: {ast.unparse(node)!r} is not allowed. Only literals, dict(...), "
        "lists and names such as nn.ReLU are read (nothing is evaluated); write policy_kwargs as a YAML mapping instead"
    )


def parse_policy_kwargs_string(text: str) -> dict[str, Any]:
    """
    Parse the zoo's ``policy_kwargs`` string into a plain mapping, without evaluating it.

    >>> parse_policy_kwargs_string("dict(log_std_init=-2, activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))")
    {'log_std_init': -2, 'activation_fn': 'nn.ReLU', 'net_arch': {'pi': [64], 'vf': [64]}}

    :param text: e.g. ``"dict(log_std_init=-2, ortho_init=False)"``
    :return: The mapping, with class references as strings (``"nn.ReLU"``)
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise ConfigError(f"cannot parse policy_kwargs {text!r}: {error.msg}; write it as a YAML mapping instead") from None
    value = _convert(tree.body, text)
    if not isinstance(value, dict):
        raise ConfigError(f"policy_kwargs {text!r} is not a mapping; write e.g. dict(net_arch=[64, 64])")
    return value


def parse_literal_string(text: str, key: str) -> Any:
    """
    Parse a zoo value written as a Python literal string, e.g. ``normalize: "{'norm_obs': False}"``.

    :param text: The string
    :param key: The key it came from, for the error message
    :return: The literal value
    """
    try:
        return _convert(ast.parse(text.strip(), mode="eval").body, text)
    except SyntaxError as error:
        raise ConfigError(f"`{key}`: cannot parse {text!r}: {error.msg}") from None
