"""
The optional dependencies ``make`` installs for the tests: a test that needs one fails, naming the extra, when it is
missing (a broken install must not pass as skipped tests). Tests that need none run anyway.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """
    :param module: The module to import
    :param extra: The sb3-safe extra that installs it
    :return: The module
    :raises ImportError: Naming the extra, when it is not installed
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{module!r} is not installed: the '{extra}' extra is part of the test install (make installs it; "
            f"pip install -e '.[{extra}]'). Its tests fail rather than skip: {error}"
        ) from None
