"""Building instances of frozen dataclasses on hot paths.

A frozen dataclass's generated __init__ sets each field through object.__setattr__, one call
per field, and a first load builds several such objects per file and per task. `build` fills
the instance's __dict__ at once instead.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def build(cls: type[T], **fields: Any) -> T:
    """An instance of the frozen dataclass `cls`, as `cls(**fields)` would make it. Fields left
    out keep their class default (and are not pickled); no __post_init__ runs, so it is only for
    classes without one. Tests check it builds what the class would."""
    instance = object.__new__(cls)
    instance.__dict__.update(fields)
    return instance
