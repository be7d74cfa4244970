"""Exceptions on the wire: errors travel pickled, and an error that will not pickle still arrives.

All low-level failures of turning an exception into bytes and back are translated here, once.
A store's "no room" travels as header fields instead (it is answered on hot paths, and its
fields are all it needs): :func:`full_fields` and :func:`raise_if_full`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, cast

import cloudpickle

from memlab.exceptions import MemlabError, ObjectStoreFullError, TaskError
from memlab.protocol.frames import MAX_PAYLOAD_BYTES

# An error travels in one frame; one that pickles larger (it holds a large value) arrives as
# its text instead, which is what the user reads anyway.
_MAX_ERROR_BYTES = MAX_PAYLOAD_BYTES // 4
_TEXT = 1 << 16


def dumps_error(error: BaseException) -> bytes:
    try:
        data = cloudpickle.dumps(error, protocol=5)
        if len(data) <= _MAX_ERROR_BYTES:
            return data
        raise ValueError(f"the error pickles to {len(data)} bytes")
    except Exception:
        fallback = TaskError(
            "<unknown>",
            None,
            f"{type(error).__name__}: {error}"[:_TEXT],
            cause_repr=repr(error)[:_TEXT],
        )
        return cloudpickle.dumps(fallback, protocol=5)


def loads_error(data: bytes) -> BaseException:
    try:
        error = cloudpickle.loads(data)
    except Exception as exc:
        return MemlabError(f"an error was raised remotely but could not be read back: {exc!r}")
    if not isinstance(error, BaseException):
        return MemlabError(f"a remote error arrived as a {type(error).__name__}, not an exception")
    return error


# The reply keeps the caller's own type: a reply read off a connection comes back as it went in.
_Reply = TypeVar("_Reply", bound=Mapping[str, object])
# What full_fields puts on the wire, in ObjectStoreFullError's argument order.
_FullFields = tuple[int, int, int, int, str]


def full_fields(exc: ObjectStoreFullError) -> list[int | str]:
    """A store's "no room" as a reply header field (``{"full": full_fields(exc)}``)."""
    return [exc.requested, exc.capacity, exc.used, exc.pinned, exc.detail]


def raise_if_full(reply: _Reply) -> _Reply:
    """The reply, unless it says the store had no room: then that ObjectStoreFullError."""
    if "full" in reply:
        raise ObjectStoreFullError(*cast(_FullFields, reply["full"]))
    return reply
