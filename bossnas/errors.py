"""The one exception type for user mistakes.

The CLI catches :class:`BossNASError` and prints its message as a single line; anything
else is a programming error and keeps its traceback.
"""

from __future__ import annotations


class BossNASError(Exception):
    """A user mistake (bad input, bad config, missing file) with a one-line message."""


def closest(name: str, options: list[str] | tuple[str, ...]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    import difflib

    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def one_line(exc: BaseException) -> str:
    r"""The message of ``exc`` on one line: line breaks in quoted user input are escaped.

    >>> print(one_line(BossNASError("'a" + chr(10) + "b' is not a width")))
    'a\nb' is not a width
    """
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")
