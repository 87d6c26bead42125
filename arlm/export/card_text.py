"""How a value taken from a run is written into a model card: as text that cannot change the
card's Markdown.

A checkpoint's ``hyper_parameters`` (``job_name``, tags, dataset names, settings) and its
callbacks' states are data a user or an attacker may have written: a newline would start a new
section or code line, ``<`` raw HTML, a backtick or ``|`` would end a code span or a table cell.

* :func:`inline_code`: a value as one code span on one line (control characters shown as their
  escapes, ``|`` escaped for tables, a fence longer than any run of backticks inside);
* :func:`is_hub_tag`: whether a value may be a tag of the card's front matter;
* :func:`plain_text`: a value as plain inline text (control characters shown as their escapes,
  Markdown's and HTML's special characters backslash-escaped; ``_`` only where it could start or
  end emphasis, not inside a word such as ``star_easy``).
"""

import re
from typing import Any

CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>#!|&~]|(?<![A-Za-z0-9_])_|_(?![A-Za-z0-9_]))")
BACKTICK_RUN = re.compile(r"`+")
HUB_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def one_line(value: Any) -> str:
    """``str(value)`` with each control character (newline, tab, escape...) written as its
    escape (``\\n``), so the text stays on one line."""
    return CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), str(value))


def inline_code(value: Any) -> str:
    """``value`` as a Markdown code span, safe inside a table cell."""
    text = one_line(value).replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in BACKTICK_RUN.findall(text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain_text(value: Any) -> str:
    """``value`` as inline Markdown text that renders as itself (no markup, no HTML)."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", one_line(value))


def is_hub_tag(value: Any) -> bool:
    """True for a short name of letters, digits, ``.``, ``_`` and ``-`` (``star_easy``)."""
    return isinstance(value, str) and HUB_TAG.fullmatch(value) is not None
