"""
What an option accepts, said once in its type and checked from there.

The options of the health detectors (:class:`~sb3_safe.health.Thresholds`) and of the
callbacks (:class:`~sb3_safe.callbacks.RollbackOptions`, ...) are dataclass fields annotated
with one of the kinds below. The same annotation checks a value passed in Python
(``__post_init__`` calls :func:`check_fields`) and one read from a profile
(:func:`check_mapping`), so the check cannot drift from the field.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Example:
...     window: Count = 10
...     def __post_init__(self) -> None:
...         check_fields(self)
>>> Example(window=2.5)
Traceback (most recent call last):
...
sb3_safe.options.OptionError: `window` = 2.5: must be a whole number >= 1 (a count)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from sb3_safe.errors import ConfigError, unknown_key

__all__ = [
    "KINDS",
    "AnyFinite",
    "Count",
    "CountOrZero",
    "Factor",
    "Fraction",
    "FractionOrZero",
    "Kind",
    "Multiple",
    "NonNegative",
    "OptionError",
    "Positive",
    "check_fields",
    "check_mapping",
    "interval_text",
    "option_kinds",
    "parse_number",
]


class OptionError(ConfigError):
    """An option's value is not what its kind accepts."""


@dataclass(frozen=True)
class Kind:
    """
    One kind of option value.

    :param name: Short name (``count``)
    :param allowed: What is allowed, in words, for the error message
    :param accepts: Whether a finite number is allowed
    :param integer: Whether only whole numbers are allowed
    """

    name: str
    allowed: str
    accepts: Callable[[float], bool]
    integer: bool = False
    #: Whether infinity is refused even where ``accepts`` takes it (``max_grad_norm: .inf`` is allowed)
    finite: bool = True

    def check(self, key: str, value: Any) -> int | float:
        """
        :param key: The option's name, for the message
        :param value: The value to check
        :return: The value as ``int`` or ``float``
        :raises OptionError: When the value is not a number of this kind
        """
        number = parse_number(value)
        if (
            number is not None
            and not math.isnan(number)
            and (math.isfinite(number) or not self.finite)
            and (not self.integer or number.is_integer())
            and self.accepts(number)
        ):
            return int(number) if self.integer else number
        shown = repr(value) if number is None else f"{number:g}"
        raise OptionError(f"`{key}` = {shown}: must be {self.allowed} ({self.name})")

    @classmethod
    def interval(
        cls,
        name: str,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
        high_open: bool = False,
        integer: bool = False,
    ) -> Kind:
        """
        :param name: What the value is, for the message (``discount factor``)
        :param low: Lower bound (``None``: none)
        :param high: Upper bound (``None``: none)
        :param low_open: The lower bound itself is excluded
        :param high_open: The upper bound itself is excluded
        :param integer: Only whole numbers
        :return: The kind of the numbers in that interval (infinity allowed where the interval reaches it)
        """

        def accepts(x: float) -> bool:
            low_ok = low is None or (x > low if low_open else x >= low)
            return low_ok and (high is None or (x < high if high_open else x <= high))

        return cls(
            name,
            f"a {'whole ' if integer else ''}number {interval_text(low, high, low_open, high_open)}".rstrip(),
            accepts,
            integer=integer,
            finite=False,
        )


def interval_text(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """:return: ``in (0, 1]``, ``> 0``, ``>= 1`` or ``""`` (no bounds)"""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def parse_number(value: Any) -> float | None:
    """
    :param value: A value from YAML or Python
    :return: It as a float, or ``None`` when it is not a number (a bool is not). A string that reads
        as a number counts: PyYAML reads ``1e-3`` (no dot) as a string.
    """
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


#: Every kind by name.
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("count", "a whole number >= 1", lambda x: x >= 1, integer=True),
        Kind("count or zero", "a whole number >= 0", lambda x: x >= 0, integer=True),
        Kind("fraction", "a number in (0, 1]", lambda x: 0 < x <= 1),
        Kind("fraction or zero", "a number in [0, 1]", lambda x: 0 <= x <= 1),
        Kind("factor", "a number in (0, 1]: 1 keeps the value", lambda x: 0 < x <= 1),
        Kind("multiple", "a number > 1", lambda x: x > 1),
        Kind("positive", "a finite number > 0", lambda x: x > 0),
        Kind("non-negative", "a finite number >= 0", lambda x: x >= 0),
        Kind("any finite", "any finite number", lambda x: True),
    )
}

#: A number of updates, episodes or rollbacks, at least one.
Count = Annotated[int, KINDS["count"]]
#: A count that may be zero (zero turns the thing off).
CountOrZero = Annotated[int, KINDS["count or zero"]]
#: A share of something: in (0, 1].
Fraction = Annotated[float, KINDS["fraction"]]
#: A share that may be zero: in [0, 1].
FractionOrZero = Annotated[float, KINDS["fraction or zero"]]
#: A multiplier that lowers a value: in (0, 1].
Factor = Annotated[float, KINDS["factor"]]
#: How many times a reference level: above 1.
Multiple = Annotated[float, KINDS["multiple"]]
#: A finite level above zero (a KL, a std).
Positive = Annotated[float, KINDS["positive"]]
#: A finite level at or above zero.
NonNegative = Annotated[float, KINDS["non-negative"]]
#: Any finite number (an explained variance can be any negative number).
AnyFinite = Annotated[float, KINDS["any finite"]]


def option_kinds(cls: type[Any]) -> dict[str, Kind]:
    """
    :param cls: A dataclass whose fields are annotated with the kinds above
    :return: Each field's kind, in field order
    :raises TypeError: When a field has no kind (a programming error, caught by the tests)
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    kinds = {}
    for field in dataclasses.fields(cls):
        metadata = getattr(hints[field.name], "__metadata__", ())
        found = [m for m in metadata if isinstance(m, Kind)]
        if not found:
            raise TypeError(f"{cls.__name__}.{field.name} has no option kind: annotate it with one of sb3_safe.options")
        kinds[field.name] = found[0]
    return kinds


def check_fields(instance: Any) -> None:
    """
    Check every field of a dataclass instance against its kind (call it from ``__post_init__``).

    :raises OptionError: On the first field whose value its kind does not accept
    """
    for key, kind in option_kinds(type(instance)).items():
        kind.check(key, getattr(instance, key))


def check_mapping(classes: tuple[type[Any], ...], value: Mapping[str, Any], prefix: str = "") -> dict[str, int | float]:
    """
    Check a mapping of options (a profile's ``health:`` block) against the fields of ``classes``.

    :param classes: Dataclasses whose fields together are the allowed keys
    :param value: The mapping
    :param prefix: Put before each key in messages (``health.``)
    :return: The values as numbers
    :raises OptionError: On an unknown key (with "did you mean") or a bad value
    """
    kinds: dict[str, Kind] = {}
    for cls in classes:
        kinds.update(option_kinds(cls))
    out: dict[str, int | float] = {}
    for key, item in value.items():
        kind = kinds.get(str(key))
        if kind is None:
            raise OptionError(unknown_key(str(key), kinds, prefix))
        out[str(key)] = kind.check(f"{prefix}{key}", item)
    return out
