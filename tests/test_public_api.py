"""The public API shows its shape: every name a public signature uses is exported.

The test walks ``inspect.signature`` of every exported callable, of the public
methods of every exported class and of their annotated attributes, takes each
identifier of their (string) annotations, and requires it to be exported from
``trio_sse`` too, unless it is a builtin, a :mod:`typing` /
:mod:`collections.abc` name, a dotted name from another library
(``trio.Nursery``), or listed in ``NOT_EXPORTED`` with the reason.
"""

from __future__ import annotations

import builtins
import collections.abc
import inspect
import re
import typing
from collections.abc import Iterator

import trio_sse

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_GENERIC = set(dir(builtins)) | set(dir(typing)) | set(dir(collections.abc))

#: Names a public signature may use without being exported, and why.
NOT_EXPORTED = {
    # prometheus_client's own class, the return type of a Collector.
    "Metric": {"BrokerCollector.collect", "BrokerCollector.describe"},
    # Requests are built by the servers, not by users.
    "BodyReader": {"Request.__init__"},
}

#: Names that must not be public any more (CHANGELOG, "Removed").
REMOVED = {"Route", "Server", "WebSocketRoute", "event_frame"}


def _annotations(obj: object) -> Iterator[str]:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return
    for param in sig.parameters.values():
        if param.annotation is not inspect.Parameter.empty:
            yield str(param.annotation)
    if sig.return_annotation is not inspect.Signature.empty:
        yield str(sig.return_annotation)


def _public_signatures() -> Iterator[tuple[str, str]]:
    """``(where, annotation)`` for every annotation of the public API."""
    for name in trio_sse.__all__:
        obj = getattr(trio_sse, name)
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                if isinstance(value, staticmethod | classmethod):
                    value = value.__func__
                if isinstance(value, property):
                    value = value.fget
                if callable(value):
                    for ann in _annotations(value):
                        yield f"{name}.{attr}", ann
            for attr, ann in vars(obj).get("__annotations__", {}).items():
                if not attr.startswith("_"):
                    yield f"{name}.{attr}", str(ann)
        elif callable(obj):
            for ann in _annotations(obj):
                yield name, ann


def test_every_name_in_a_public_signature_is_exported() -> None:
    exported = set(trio_sse.__all__)
    missing: dict[str, set[str]] = {}
    for where, ann in _public_signatures():
        # String literals (Literal["problem", "note"]) are values, not names.
        for ident in _IDENT.findall(_QUOTED.sub("", ann)):
            if "." in ident or ident in _GENERIC or ident in exported:
                continue
            if where in NOT_EXPORTED.get(ident, set()):
                continue
            missing.setdefault(ident, set()).add(where)
    assert not missing, f"used in public signatures but not exported: {missing}"


def test_the_walk_sees_what_it_checks() -> None:
    # The test above can fail: the walk finds the names it must find.
    seen = {ident for _, ann in _public_signatures() for ident in _IDENT.findall(ann)}
    assert {"EndReason", "PolicyName", "Handler", "OnOpen", "Metric"} <= seen


def test_exported_names_exist_and_internal_ones_are_gone() -> None:
    for name in trio_sse.__all__:
        assert getattr(trio_sse, name) is not None, name
    assert not REMOVED & set(trio_sse.__all__)
    for name in REMOVED:
        assert not hasattr(trio_sse, name), name
    assert len(trio_sse.__all__) == len(set(trio_sse.__all__))


def test_trio_naming_conventions() -> None:
    """``open_*`` are async context managers; no ``timeout`` parameter anywhere."""
    for name in trio_sse.__all__:
        obj = getattr(trio_sse, name)
        if name.startswith("open_"):
            manager = obj("")
            assert hasattr(manager, "__aenter__"), name
            manager.gen.aclose().close()  # never entered: nothing to clean up
        if callable(obj):
            try:
                params = inspect.signature(obj).parameters
            except (TypeError, ValueError):
                continue
            assert "timeout" not in params, name
            if "task_status" in params:
                assert inspect.iscoroutinefunction(obj), name
