"""
pytest plugin: run sb3-contrib's own tests of RecurrentPPO and MaskablePPO on sb3-safe's classes.

Loaded with ``-p contrib_upstream_plugin`` by ``make test-contrib`` before any test module is
imported (their parametrize lists are built at import time), so ``from sb3_contrib import
RecurrentPPO`` in those modules yields ``SafeRecurrentPPO``. The tests come from sb3-contrib's
source distribution on PyPI at the installed version; nothing of theirs is kept here. In the
modules that test many algorithms, only the cases of these two are kept.
"""

import inspect

import sb3_contrib
import sb3_contrib.ppo_mask
import sb3_contrib.ppo_recurrent

from sb3_safe import SafeMaskablePPO, SafeRecurrentPPO

sb3_contrib.RecurrentPPO = SafeRecurrentPPO  # type: ignore[misc]
sb3_contrib.ppo_recurrent.RecurrentPPO = SafeRecurrentPPO  # type: ignore[misc]
sb3_contrib.MaskablePPO = SafeMaskablePPO  # type: ignore[misc]
sb3_contrib.ppo_mask.MaskablePPO = SafeMaskablePPO  # type: ignore[misc]

SAFE = (SafeRecurrentPPO, SafeMaskablePPO)
# Whole modules about the two algorithms; the others test many algorithms.
OWN_MODULES = ("test_lstm.py", "test_invalid_actions.py")


def _ours(item) -> bool:  # type: ignore[no-untyped-def]
    if item.fspath.basename in OWN_MODULES:
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(value in SAFE for value in callspec.params.values()):
        return True
    if callspec is not None and any(isinstance(value, type) for value in callspec.params.values()):
        return False  # parametrized over other algorithms
    source = inspect.getsource(item.function)
    return "MaskablePPO" in source or "RecurrentPPO" in source


def pytest_collection_modifyitems(config, items: list) -> None:  # type: ignore[no-untyped-def, type-arg]
    kept = [item for item in items if _ours(item)]
    deselected = [item for item in items if not _ours(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = kept
