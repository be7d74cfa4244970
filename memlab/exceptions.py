"""Every error memlab raises to users, and the few it passes between its own processes.

This module owns the exception hierarchy (Ray's names) and how each error crosses a process
boundary. Invariants:

* Every exception round-trips through ``pickle`` (protocol 5) and ``cloudpickle`` with its
  attributes intact. A class whose constructor takes more than a message lists the
  constructor's arguments in ``_fields`` so ``MemlabError.__reduce__`` can call it again.
* A failed task surfaces as a ``TaskError`` that is also an instance of the user's exception
  class, so ``except ValueError`` keeps working across the process boundary. The user's
  ``__init__`` is never called to build it (its signature is unknown).
* Messages name the problem and the fix.

::

    MemlabError(Exception)
    ├── RuntimeNotStartedError(MemlabError, RuntimeError)
    ├── RuntimeConflictError(MemlabError, RuntimeError)
    ├── EventsUnavailableError(MemlabError, RuntimeError)   memlab.state without a collector
    ├── TaskError                         TaskError(ValueError) subclasses both, per cause class
    ├── TaskCancelledError
    ├── TaskUnschedulableError            its node affinity names a node that is not alive
    ├── WorkerCrashedError
    ├── ObjectLostError
    │   ├── OwnerDiedError
    │   ├── ObjectReconstructionFailedError
    │   └── StaleRefError                 a ref kept from a session that ended
    ├── GetTimeoutError(MemlabError, TimeoutError)
    ├── ObjectStoreFullError
    ├── SerializationError(MemlabError, TypeError)
    ├── ActorDiedError
    ├── ProtocolError                     internal: the connection is dropped
    │   └── AuthenticationError
    │       └── HandshakeAbandonedError   a peer went away mid-handshake (logged quietly)
    └── ConnectionClosedError             internal: translated before users see it
"""

from __future__ import annotations

import os
import pickle
import signal as _signal
import threading
import traceback
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar

import cloudpickle

__all__ = [
    "ActorDiedError",
    "AuthenticationError",
    "ConnectionClosedError",
    "EventsUnavailableError",
    "GetTimeoutError",
    "HandshakeAbandonedError",
    "MemlabError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectStoreFullError",
    "OwnerDiedError",
    "ProtocolError",
    "RuntimeConflictError",
    "RuntimeNotStartedError",
    "SerializationError",
    "StaleRefError",
    "TaskCancelledError",
    "TaskError",
    "TaskUnschedulableError",
    "WorkerCrashedError",
]


class MemlabError(Exception):
    """Base class of every memlab error; raised directly only for errors without a subclass."""

    # Constructor arguments, in order, that __reduce__ passes back to the constructor.
    _fields: ClassVar[tuple[str, ...]] = ()

    def __reduce__(self) -> Any:
        if not self._fields:
            return super().__reduce__()
        state = {k: v for k, v in self.__dict__.items() if k not in self._fields}
        return type(self), tuple(getattr(self, f) for f in self._fields), state or None


class RuntimeNotStartedError(MemlabError, RuntimeError):
    """Raised when an API call needs the runtime but ``memlab.init()`` has not been called."""

    _fields = ("operation",)

    def __init__(self, operation: str = "this call") -> None:
        self.operation = operation
        super().__init__(
            f"{operation} needs a running memlab runtime, but none is started; call "
            "memlab.init() first (or %memlab start in a notebook)."
        )


class EventsUnavailableError(MemlabError, RuntimeError):
    """Raised by ``memlab.state`` when the session's event collector cannot answer.

    ``reason`` says why: the runtime was started with ``events=False``, or the collector
    process is gone.
    """

    _fields = ("operation", "reason")

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(
            f"{operation} reads the event stream, but {reason}; start memlab with "
            "memlab.init(events=True) (the default) to see the runtime's state."
        )


class RuntimeConflictError(MemlabError, RuntimeError):
    """Raised when ``init()`` is called again with arguments that differ from the running runtime.

    ``differences`` maps each argument name to ``(running value, requested value)``.
    """

    _fields = ("differences",)

    def __init__(self, differences: Mapping[str, tuple[Any, Any]]) -> None:
        self.differences = dict(differences)
        listed = "; ".join(
            f"{name}: running {old!r}, requested {new!r}"
            for name, (old, new) in sorted(self.differences.items())
        )
        super().__init__(
            f"memlab is already running with different settings ({listed}). Call "
            "memlab.shutdown() first to restart it with the new settings."
        )


class TaskCancelledError(MemlabError):
    """Raised by ``get()`` on the result of a task that ``memlab.cancel()`` stopped."""

    _fields = ("task_name", "task_id")

    def __init__(self, task_name: str, task_id: str) -> None:
        self.task_name = task_name
        self.task_id = task_id
        super().__init__(
            f"Task {task_name!r} ({task_id}) was cancelled, so it has no result; submit it "
            "again if you still need the value."
        )


class TaskUnschedulableError(MemlabError):
    """Raised by ``get()`` on the result of a task bound to a node (a hard node affinity) that
    is not alive: it died, or no node of that name ever joined."""

    _fields = ("task_name", "task_id", "node_id", "reason")

    def __init__(self, task_name: str, task_id: str, node_id: str, reason: str) -> None:
        self.task_name = task_name
        self.task_id = task_id
        self.node_id = node_id
        self.reason = reason
        super().__init__(
            f"Task {task_name!r} ({task_id}) must run on node {node_id!r}, which {reason}; "
            "place it on an alive node (memlab.testing.nodes_alive() lists them), or make the "
            "affinity soft so it runs elsewhere when its node is gone."
        )


_NATIVE_CRASH_SIGNALS = frozenset({"SIGSEGV", "SIGBUS", "SIGABRT", "SIGILL", "SIGFPE"})


class WorkerCrashedError(MemlabError):
    """Raised when the worker running a task died on every attempt that ``max_retries`` allowed."""

    _fields = ("task_name", "worker_id", "pid", "exitcode", "signal", "attempts")

    def __init__(
        self,
        task_name: str,
        worker_id: str,
        pid: int | None,
        exitcode: int | None,
        signal: int | None,
        attempts: int,
    ) -> None:
        self.task_name = task_name
        self.worker_id = worker_id
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal
        self.attempts = attempts
        where = f"Worker {worker_id}" + (f" (pid {pid})" if pid is not None else "")
        times = "once" if attempts == 1 else f"{attempts} times"
        super().__init__(
            f"{where} died while running task {task_name!r}: "
            f"{self.describe_exit(exitcode, signal)}. The task was attempted {times}; its "
            "max_retries option (default 3) sets how often a task is retried after its worker "
            "dies, e.g. f.options(max_retries=5)."
        )

    @staticmethod
    def describe_exit(exitcode: int | None, signal: int | None) -> str:
        """Say how a process ended and its likely cause, in one clause.

        Args:
            exitcode: The exit status, or None if unknown. A negative value means "killed by
                signal -exitcode" (the ``multiprocessing`` convention).
            signal: The number of the signal that killed the process, or None.

        Returns:
            Text such as ``"killed by SIGKILL; likely cause: killed from outside, ..."``.
        """
        if signal is None and exitcode is not None and exitcode < 0:
            signal = -exitcode
        if signal is not None:
            try:
                name = _signal.Signals(signal).name
            except ValueError:
                name = f"signal {signal}"
            if name == "SIGKILL":
                cause = "killed from outside, often by the out-of-memory killer or an explicit kill"
            elif name in _NATIVE_CRASH_SIGNALS:
                cause = "a crash in native code (an extension module)"
            else:
                cause = "stopped from outside by an explicit signal"
            return f"killed by {name}; likely cause: {cause}"
        if exitcode is not None:
            return (
                f"exited with code {exitcode}; likely cause: the process exited (os._exit, "
                "sys.exit from a C extension, or an interpreter abort)"
            )
        return "exit status unknown; likely cause: it lost its connection to the runtime"


class ObjectLostError(MemlabError):
    """Raised by ``get()`` when every copy of an object is gone and it cannot be rebuilt.

    This happens to values created by ``memlab.put()`` (they have no lineage to re-execute)
    and to task results whose lineage was already released.
    """

    _fields: ClassVar[tuple[str, ...]] = ("object_id", "reason", "call_site")

    def __init__(self, object_id: str, reason: str = "", call_site: str | None = None) -> None:
        self.object_id = object_id
        self.reason = reason
        self.call_site = call_site
        super().__init__(self._message())

    def _describe_object(self) -> str:
        site = f" created at {self.call_site}" if self.call_site else ""
        return f"Object {self.object_id}{site}"

    def _message(self) -> str:
        reason = self.reason or "every copy of it is gone"
        return (
            f"{self._describe_object()} is lost: {reason}. Values from memlab.put() cannot be "
            "rebuilt; compute the value in a task so memlab can re-execute it, or put it again."
        )


class OwnerDiedError(ObjectLostError):
    """Raised by ``get()`` on a borrowed object whose owner process died (objects fate-share)."""

    _fields = ("object_id", "owner", "call_site")

    def __init__(self, object_id: str, owner: str, call_site: str | None = None) -> None:
        self.owner = owner
        super().__init__(object_id, f"its owner {owner} died", call_site)

    def _message(self) -> str:
        return (
            f"{self._describe_object()} is lost because the process that owns it ({self.owner}) "
            "died; objects fate-share with their owner, so its copies were removed. To survive "
            "this, create the object from the driver (call .remote() or memlab.put() there) so "
            "the driver owns it."
        )


class StaleRefError(ObjectLostError):
    """Raised when a ref made in an earlier session is used (``get``, ``wait``, ``cancel``, as a
    task or actor argument, or inside a ``put`` value) after ``shutdown()`` and a new ``init()``.

    Its object went with the session that made it (a notebook variable kept across a restart
    of the runtime is the usual way to meet one), so the code that made it must run again.
    """

    _fields = ("object_id", "call_site")

    def __init__(self, object_id: str, call_site: str | None = None) -> None:
        super().__init__(object_id, "it belongs to a memlab session that ended", call_site)

    def _message(self) -> str:
        where = (
            f"re-run the code that made it (at {self.call_site})"
            if self.call_site
            else "re-run the .remote() or memlab.put() call that made it"
        )
        return (
            f"Object {self.object_id} belongs to a memlab session that ended (shutdown() was "
            f"called, and this ref was kept across it); its value went with that session. To "
            f"recompute it in this session, {where} and use the new ref."
        )


class ObjectReconstructionFailedError(ObjectLostError):
    """Raised by ``get()`` when re-running a lost object's lineage failed or ran out of retries."""

    _fields = ("object_id", "task_name", "attempts", "reason", "call_site")

    def __init__(
        self,
        object_id: str,
        task_name: str,
        attempts: int,
        reason: str = "",
        call_site: str | None = None,
    ) -> None:
        self.task_name = task_name
        self.attempts = attempts
        super().__init__(object_id, reason, call_site)

    def _message(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return (
            f"{self._describe_object()} was lost and rebuilding it by re-running task "
            f"{self.task_name!r} failed after {self.attempts} attempt(s){why}. Raise the task's "
            "max_retries to allow more reconstructions, or recompute the value."
        )


class GetTimeoutError(MemlabError, TimeoutError):
    """Raised by ``get()`` when its ``timeout`` passes before every requested object is ready."""

    _fields = ("timeout", "pending")

    def __init__(self, timeout: float, pending: int = 1) -> None:
        self.timeout = timeout
        self.pending = pending
        what = "1 object was" if pending == 1 else f"{pending} objects were"
        super().__init__(
            f"memlab.get() timed out after {timeout:g} s: {what} not ready. The tasks keep "
            "running; call get() again with a longer timeout, or use memlab.wait() to take the "
            "results that are ready."
        )


def _format_bytes(n: int) -> str:
    """Render a byte count in binary units, e.g. ``1.5 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class ObjectStoreFullError(MemlabError):
    """Raised when a value does not fit in the node's store even after spilling everything.

    ``pinned`` bytes are held by live references or zero-copy views and cannot be spilled.
    """

    _fields = ("requested", "capacity", "used", "pinned", "detail")

    def __init__(
        self, requested: int, capacity: int, used: int, pinned: int, detail: str = ""
    ) -> None:
        self.requested = requested
        self.capacity = capacity
        self.used = used
        self.pinned = pinned
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"The object store has no room for an object of {_format_bytes(requested)}: "
            f"{_format_bytes(used)} of {_format_bytes(capacity)} are in use, "
            f"{_format_bytes(pinned)} of it pinned by live references or zero-copy views that "
            f"cannot be spilled{extra}. Free references you no longer need (del refs, and "
            "arrays read from them), or raise the limit with "
            "memlab.init(object_store_memory=...)."
        )


class SerializationError(MemlabError, TypeError):
    """Raised when a value, argument or exception cannot be pickled or unpickled."""

    _fields = ("message", "type_name", "where")

    def __init__(
        self, message: str, type_name: str | None = None, where: str | None = None
    ) -> None:
        self.message = message
        self.type_name = type_name
        self.where = where
        parts = [
            f"a value of type {type_name}" if type_name else "",
            f"in {where}" if where else "",
        ]
        context = " ".join(p for p in parts if p)
        super().__init__(f"{message} ({context})" if context else message)


class ActorDiedError(MemlabError):
    """Raised by calls to an actor that died and was not (or could no longer be) restarted."""

    _fields = ("actor_name", "actor_id", "reason")

    def __init__(self, actor_name: str, actor_id: str, reason: str) -> None:
        self.actor_name = actor_name
        self.actor_id = actor_id
        self.reason = reason
        super().__init__(
            f"Actor {actor_name} ({actor_id}) died: {reason}. Calls in flight fail unless "
            "max_task_retries allows retrying them; set max_restarts to restart the actor "
            "automatically, or create a new one."
        )


class ProtocolError(MemlabError):
    """Raised internally when a peer sends a malformed message; the connection is dropped."""

    _fields = ("message", "peer")

    def __init__(self, message: str, peer: str | None = None) -> None:
        self.message = message
        self.peer = peer
        super().__init__(f"{message} (peer {peer})" if peer else message)


class AuthenticationError(ProtocolError):
    """Raised internally when a peer fails the session's HMAC challenge; nothing is unpickled."""


class HandshakeAbandonedError(AuthenticationError):
    """Raised internally when a connecting peer closes or resets the connection before it
    answers the challenge: a process that died while connecting (a killed node's worker), not
    one holding another secret, which answers and fails the check."""


class ConnectionClosedError(MemlabError):
    """Raised internally when a connection closes while a request on it is still pending.

    The runtime translates it (into ``WorkerCrashedError``, ``OwnerDiedError``, ...) before a
    user sees it.
    """

    _fields = ("peer", "reason")

    def __init__(self, peer: str, reason: str = "") -> None:
        self.peer = peer
        self.reason = reason
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"The connection to {peer} closed while a request was pending{why}; the peer "
            "process has most likely exited."
        )


# ----------------------------------------------------------------------------------- TaskError

_READ_ONLY_HINT = (
    "Hint: values read from memlab's shared-memory store are zero-copy, read-only views; use "
    "arr.copy() (or np.array(x)) to get a writable copy."
)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_TASK_FIELDS = ("task_name", "cause", "traceback_str", "pid", "worker_id", "cause_repr")


class TaskError(MemlabError):
    """Raised by ``get()`` when user code raised inside a task.

    Instances made by ``from_exception`` (and after unpickling) belong to a class such as
    ``TaskError(ValueError)`` that subclasses both ``TaskError`` and the cause's class, so
    ``except ValueError`` and ``except TaskError`` both catch them, and attributes of the
    cause are readable on them. ``cause`` is None when the original exception could not be
    pickled; ``cause_repr`` then holds its repr. ``args`` are the cause's args.
    """

    # Set on the dynamic subclasses only: the class of the cause they mirror.
    _cause_class: ClassVar[type[BaseException] | None] = None

    def __init__(
        self,
        task_name: str,
        cause: BaseException | None,
        traceback_str: str,
        pid: int | None = None,
        worker_id: str | None = None,
        cause_repr: str | None = None,
    ) -> None:
        # The MRO may continue into the user's class, whose __init__ signature is unknown, so
        # Exception.__init__ is bypassed and args are set directly.
        self.task_name = task_name
        self.cause = cause
        self.traceback_str = traceback_str
        self.pid = pid
        self.worker_id = worker_id
        self.cause_repr = repr(cause) if cause_repr is None and cause is not None else cause_repr
        self.args = cause.args if cause is not None else (self.cause_repr,)
        if isinstance(cause, OSError) and isinstance(self, OSError):
            self.errno, self.strerror = cause.errno, cause.strerror
            self.filename, self.filename2 = cause.filename, cause.filename2

    @classmethod
    def from_exception(
        cls,
        task_name: str,
        exc: BaseException,
        *,
        pid: int | None = None,
        worker_id: str | None = None,
    ) -> TaskError:
        """Wrap the exception a task raised; call it inside the worker's ``except`` block.

        Args:
            task_name: The task's name, shown in messages.
            exc: The exception user code raised.
            pid: The worker's process id.
            worker_id: The worker's id.

        Returns:
            A ``TaskError(<cause class>)`` instance, or a plain ``TaskError`` when the cause's
            class cannot be subclassed or the cause cannot be pickled (then ``cause`` is None).
        """
        tb = exc.__traceback__
        # Skip memlab's own executor frames so the traceback starts in user code.
        while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
        mode = _pickle_mode(exc)
        if mode is None:
            return cls(task_name, None, text, pid, worker_id, repr(exc))
        error = cls(task_name, exc, text, pid, worker_id).as_instanceof_cause()
        error.__dict__["_cause_pickle_mode"] = mode  # spares __reduce__ a trial round trip
        return error

    def as_instanceof_cause(self) -> TaskError:
        """Return this error as an instance of ``TaskError(<cause class>)`` (idempotent).

        Returns self when it already is one, or when no such class can be made.
        """
        if self.cause is None or isinstance(self, type(self.cause)):
            return self
        dual = _dual_class(type(self.cause))
        if dual is None:
            return self
        try:
            new = dual.__new__(dual, *self.cause.args)
            TaskError.__init__(new, *(getattr(self, f) for f in _TASK_FIELDS))
        except Exception:  # the cause class has a __new__ that rejects its own args
            return self
        new.__dict__.update(_extra_state(self))
        return new

    def _header(self) -> str:
        where = [f"worker {self.worker_id}" if self.worker_id else ""]
        where.append(f"pid {self.pid}" if self.pid is not None else "")
        on = ", ".join(w for w in where if w)
        return f"Task {self.task_name!r} failed" + (f" on {on}" if on else "")

    def _hint(self) -> str | None:
        text = str(self.cause) if self.cause is not None else self.cause_repr or ""
        is_value_error = isinstance(self.cause, ValueError) or (
            self.cause is None and text.startswith("ValueError(")
        )
        return _READ_ONLY_HINT if is_value_error and "read-only" in text else None

    def __str__(self) -> str:
        if self.cause is not None:
            what = f"{type(self.cause).__name__}: {self.cause}"
        else:
            what = f"{self.cause_repr} (the exception could not be pickled; this is its repr)"
        hint = self._hint()
        lines = [f"{self._header()} with {what}", "", "Remote traceback:", self.traceback_str]
        return "\n".join(lines).rstrip("\n") + (f"\n\n{hint}" if hint else "")

    def __repr__(self) -> str:
        cause = repr(self.cause) if self.cause is not None else self.cause_repr
        return f"{type(self).__name__}(task_name={self.task_name!r}, cause={cause})"

    def _render_traceback_(self) -> list[str]:
        """Lines IPython shows instead of the local traceback: a header and the remote one."""
        lines = [f"{type(self).__name__}: {self._header()}. Remote traceback:"]
        lines += self.traceback_str.rstrip("\n").splitlines()
        hint = self._hint()
        return [*lines, hint] if hint else lines

    def __reduce__(self) -> Any:
        fields = [getattr(self, f) for f in _TASK_FIELDS]
        mode = self.__dict__.get("_cause_pickle_mode")
        if mode is None and self.cause is not None:
            mode = self.__dict__["_cause_pickle_mode"] = _pickle_mode(self.cause) or "none"
        if mode == "none":
            fields[1] = None  # the cause does not pickle; its repr travels instead
        elif mode == "by_new" and self.cause is not None:
            fields[1] = _ByNew(self.cause)
        rebuild = rebuild_task_error if self._cause_class is not None else TaskError
        return rebuild, tuple(fields), _extra_state(self) or None

    def _delegate_to_cause(self, name: str) -> Any:
        # Only reached for attributes the error itself lacks (installed as __getattr__ on the
        # dynamic classes), so `except MyError as e: e.code` works as it would locally.
        cause = self.__dict__.get("cause")
        if name.startswith("__") or cause is None:
            raise AttributeError(name)
        return getattr(cause, name)


def rebuild_task_error(
    task_name: str,
    cause: BaseException | None,
    traceback_str: str,
    pid: int | None,
    worker_id: str | None,
    cause_repr: str | None,
) -> TaskError:
    """Rebuild a pickled ``TaskError(<cause class>)``, re-creating its class in this process."""
    error = TaskError(task_name, cause, traceback_str, pid, worker_id, cause_repr)
    return error.as_instanceof_cause()


def _extra_state(error: TaskError) -> dict[str, Any]:
    """Attributes beyond the constructor's (e.g. ``__notes__``) that must survive pickling."""
    skip = {*_TASK_FIELDS, "_cause_pickle_mode"}
    return {k: v for k, v in error.__dict__.items() if k not in skip}


# Weak values: a dual class lives while any of its errors does, and then the cause class
# (often redefined by re-running a notebook cell) is not kept alive by this cache.
_dual_classes: weakref.WeakValueDictionary[type, type[TaskError]] = weakref.WeakValueDictionary()
_dual_lock = threading.Lock()


def _dual_class(cause_cls: type[BaseException]) -> type[TaskError] | None:
    """Return the cached ``TaskError(<cause_cls>)`` class, or None if it cannot exist."""
    if getattr(cause_cls, "_cause_class", None) is not None:
        return cause_cls  # type: ignore[return-value]  # already a dual class (nested tasks)
    # A non-Exception cause (KeyboardInterrupt, SystemExit) must not become one on the driver.
    if issubclass(TaskError, cause_cls) or not issubclass(cause_cls, Exception):
        return None
    with _dual_lock:
        dual = _dual_classes.get(cause_cls)
        if dual is not None:
            return dual
        name = f"TaskError({cause_cls.__name__})"
        namespace = {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": TaskError.__doc__,
            "_cause_class": cause_cls,
            "__getattr__": TaskError._delegate_to_cause,
        }
        try:
            dual = type(name, (TaskError, cause_cls), namespace)
        except Exception:  # final classes, layout or metaclass conflicts, refusing subclass hooks
            return None
        _dual_classes[cause_cls] = dual
        return dual


class _ByNew:
    """Pickles an exception without calling its ``__init__`` (whose signature may not match
    its ``args``, the reason default exception pickling fails for such classes)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __reduce__(self) -> Any:
        exc = self.exc
        return _new_exception, (type(exc), exc.args, dict(getattr(exc, "__dict__", {})))


def _new_exception(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _pickle_mode(exc: BaseException) -> str | None:
    """How ``exc`` survives a pickle round trip: "native", "by_new", or None if it cannot."""
    for mode, obj in (("native", exc), ("by_new", _ByNew(exc))):
        try:
            back = pickle.loads(cloudpickle.dumps(obj, protocol=5))
        except Exception:
            continue
        if type(back) is type(exc):
            return mode
    return None
