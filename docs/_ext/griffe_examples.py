"""A griffe extension for the API reference: headkit's ``Example:`` sections as code.

headkit's docstrings title their doctests ``Example:`` (STYLE.md); griffe's
Google parser only turns an ``Examples:`` section into highlighted code and
renders ``Example:`` as an admonition, where ``>>>`` becomes nested quotes.
This renames the section and drops ``# doctest:`` directives, which mean
nothing to a reader. It runs only while ``mkdocs build`` reads the docstrings.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.M)
_DOCTEST_DIRECTIVE = re.compile(r"\s*# doctest: [+\-A-Z_, ]+$", re.M)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` to ``Examples:`` and strip doctest directives."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is None:
            return
        text = _EXAMPLE_HEADING.sub(r"\1Examples:", docstring.value)
        docstring.value = _DOCTEST_DIRECTIVE.sub("", text)
