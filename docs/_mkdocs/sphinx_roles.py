"""A griffe extension for the docs site: Sphinx roles in docstrings become code.

The docstrings follow the style guide (Google style with Sphinx roles such as
``:class:`App```); mkdocstrings renders Markdown, where a role would show as
literal text. Each ``:role:`~a.b.c``` becomes ```c``` (``a.b.c`` without the
tilde), and reST's double backquotes become single ones.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite each object's docstring once, when griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of ``obj``."""
        if obj.docstring is not None:
            text = ROLE.sub(_role, obj.docstring.value)
            obj.docstring.value = re.sub(r"``([^`]+)``", r"`\1`", text)
