"""What counts as an integer or a number in argument checks, decided once.

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds and a flag passed
by mistake would pass as ``1``; NumPy scalars (what a row read from an array holds) are accepted.
Each caller words its own error, naming its argument; :func:`check_int_at_least` is the common
wording for "an integer >= k".
"""

import math
from typing import Any

import numpy as np


def is_int(value: Any) -> bool:
    """A Python or NumPy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """A Python or NumPy integer or float that is not a bool (NaN and infinities included)."""
    return is_int(value) or isinstance(value, (float, np.floating))


def is_finite_number(value: Any) -> bool:
    """A number (see :func:`is_number`) that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def check_int_at_least(name: str, value: Any, least: int) -> int:
    """``value`` as a Python ``int`` if it is an integer >= ``least``; else ``ValueError`` naming
    ``name`` and the value."""
    if not is_int(value) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return int(value)
