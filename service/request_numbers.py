"""Integers a request carries as text (a query parameter, a header): one strict parser.

Python's ``int()`` accepts what no client means and fails on what a client may send: it takes
any Unicode digit (``"٣"``) but raises on others that ``str.isdigit()`` accepts (``"²"``), takes
signs, spaces and underscores, and refuses more than 4,300 digits (a ``ValueError`` that became
a 500) after quadratic work. ``bounded_int`` takes ASCII digits only and never parses more
digits than its upper bound has; anything else is a ``RequestInputError`` naming the field and
the range.
"""

from __future__ import annotations

from service.errors import RequestInputError

ASCII_DIGITS = frozenset("0123456789")


def bounded_int(raw: str, loc: list[str | int], low: int, high: int, kind: str) -> int:
    """``raw`` as an integer from ``low`` to ``high`` (``0 <= low <= high``): ASCII digits
    only, leading zeros allowed; ``RequestInputError`` at ``loc`` (type ``kind``) saying
    "must be an integer from low to high" otherwise."""
    significant = raw.lstrip("0")
    if (
        not raw
        or not ASCII_DIGITS.issuperset(raw)
        or len(significant) > len(str(high))
        or not low <= int(significant or "0") <= high
    ):
        raise RequestInputError(loc, f"must be an integer from {low} to {high}", kind)
    return int(significant or "0")
