"""Give the C allocator's free memory back to the system: :func:`release_memory`.

After many streams end, their objects are freed but the process keeps the
pages: glibc's ``free`` returns only the top of its heap, and CPython's
small-object allocator keeps an arena while any object in it lives. Under
``PYTHONMALLOC=malloc`` every Python object comes from glibc, whose
``malloc_trim(0)`` hands back each free page wherever it lies; that is what
this calls. It is a library call, not a setting: nothing here changes how
the interpreter allocates or collects.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

__all__ = ["release_memory"]


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The symbols already loaded into the process: glibc's, if it is glibc.
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # musl and other C libraries have none
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_memory() -> bool:
    """Return the C allocator's free pages to the operating system; ``True`` if any went.

    Calls glibc's ``malloc_trim(0)``, which gives back every whole free page of
    its heaps. With CPython's default allocator most Python objects live in
    pymalloc arenas instead, which this cannot touch; start the process with
    ``PYTHONMALLOC=malloc`` for it to return what ended streams used (see
    *Memory after many connects and disconnects* in ``docs/deploying.md``).

    It runs in the calling thread and holds the event loop meanwhile, for a
    few milliseconds after thousands of streams ended (``docs/deploying.md``
    has the measured figure). Where the C library has no ``malloc_trim``
    (macOS, musl) it does nothing and returns ``False``.
    """
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
