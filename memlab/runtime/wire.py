"""Exceptions on the wire: errors travel pickled, and an error that will not pickle still arrives.

All low-level failures of turning an exception into bytes and back are translated here, once.
"""

from __future__ import annotations

import cloudpickle

from memlab.exceptions import MemlabError, TaskError


def dumps_error(error: BaseException) -> bytes:
    try:
        return cloudpickle.dumps(error, protocol=5)
    except Exception:
        fallback = TaskError("<unknown>", None, f"{type(error).__name__}: {error}",
                             cause_repr=repr(error))
        return cloudpickle.dumps(fallback, protocol=5)


def loads_error(data: bytes) -> BaseException:
    try:
        error = cloudpickle.loads(data)
    except Exception as exc:
        return MemlabError(f"an error was raised remotely but could not be read back: {exc!r}")
    if not isinstance(error, BaseException):
        return MemlabError(f"a remote error arrived as a {type(error).__name__}, not an exception")
    return error
