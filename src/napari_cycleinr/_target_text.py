"""The rule for what a user types as target values: a decimal comma is a decimal point.

Radiologists in much of Europe type 1,25 for 1.25 mm. One comma inside a number (digits on both sides, no
point) is therefore a decimal comma; values are separated by spaces, semicolons, or commas anywhere else:
"1,25" -> 1.25; "1,25; 2" and "1.25 2" -> 1.25 and 2; "2, 3, 5" and "2,3,5" -> 2, 3 and 5.
"""

from __future__ import annotations

import re

VALUES_HELP = (
    "one number, or several for one layer each. A comma inside a number is a decimal comma (1,25 = 1.25); "
    "separate several values with spaces, semicolons or ', ' (1,25; 2  or  1.25 2  or  2, 3, 5)"
)
_SEPARATORS = re.compile(r"([;\s]+)")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def with_decimal_points(text: str) -> str:
    """The typed text with each decimal comma made a point, for `_runner.plan_targets` (which splits on
    commas, semicolons and spaces)."""
    parts = _SEPARATORS.split(str(text))
    return "".join(part.replace(",", ".") if _DECIMAL_COMMA.fullmatch(part) else part for part in parts)
