"""``python -m trio_sse``: the ``trio-sse`` command."""

from __future__ import annotations

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
