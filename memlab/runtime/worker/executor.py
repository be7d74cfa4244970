"""Running tasks in a worker: arguments in, user code, results out, errors as values.

Owns the worker's function cache and its task queue. Tasks run one at a time on the main
thread (so a cancel can interrupt user code with KeyboardInterrupt) while the reader threads
keep answering owner and borrower messages.

Results: a value up to the inline threshold travels in the reply; a larger one is written once
into the node's shared-memory store under the return's object id. Refs inside a result are lent
to the caller before the reply goes out: this worker adds the caller as a borrower of refs it
owns, and asks third-party owners to do the same, so no ref is unheld at any moment.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from memlab.exceptions import (
    ConnectionClosedError,
    MemlabError,
    SerializationError,
    TaskCancelledError,
    TaskError,
)
from memlab.ids import object_id
from memlab.protocol.errors import dumps_error
from memlab.runtime.coreworker.ports import WorkerHooks
from memlab.runtime.coreworker.store_client import ROOM_WAIT
from memlab.runtime.coreworker.task_spec import ArgRef
from memlab.serialization import deserialize, loads_function, serialize

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.core_worker import CoreWorker

FUNCTION_CACHE_SIZE = 1024


class _ArgumentError(Exception):
    """Resolving an argument failed; the wrapped memlab error is the task's result."""


class Executor:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.functions: OrderedDict[bytes, Any] = OrderedDict()
        # Code that captures ObjectRefs, kept as bytes and unpickled for each task: a cached
        # function would borrow its captured refs for as long as it stays cached.
        self.function_blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self.current: bytes | None = None
        self.cancelled: set[bytes] = set()
        self._main = threading.main_thread().ident
        self.current_caller: str | None = None
        self.dead_callers: set[str] = set()
        self._actor_host: Any = None
        self.blocked = False
        # Started tasks not yet announced: task id -> the task.started event's fields. Most tasks
        # end before the next flush; their reply carries the start instead (one event fewer per
        # task for the owner to build, ship and fold); the flush announces the ones still running.
        self.unannounced: dict[bytes, tuple[int, float]] = {}  # task id -> (attempt, start)
        core.set_worker_hooks(
            WorkerHooks(busy=self.busy, on_block=self.bounce_queued, on_flush=self._on_flush)
        )
        for kind in ("push", "actor_create", "actor_call"):
            core.register(kind, self._on_push)
        core.register("cancel", self._on_cancel)
        core.register("steal", self._on_steal)
        core.on_peer_lost(self._caller_lost)

    def busy(self) -> bool:
        """A task runs, waits or was not announced here, or its output is not flushed."""
        return (
            bool(self.unannounced)
            or self.current is not None
            or not self.queue.empty()
            or bool(self.core.output.dirty)
        )

    def _on_flush(self) -> None:
        self.announce_running()
        self.core.output.flush()  # what running tasks printed since the last round

    def announce_running(self) -> None:
        """Emit ``task.started`` for tasks that have run since before this flush."""
        if not self.unannounced:
            return
        core = self.core
        for tid in list(self.unannounced):
            started = self.unannounced.pop(tid, None)
            if started is not None:
                core.events.emit(
                    "task.started",
                    task_id=tid,
                    worker=core.proc,
                    node=core.node_id,
                    attempt=started[0],
                    ts=started[1],
                )

    def bounce_queued(self, blocked: bool) -> None:
        """The running task blocks in ``get``: tasks queued behind it, and tasks pushed while
        it waits, go back to their owners to run elsewhere, since one of them may be what it
        waits for (a deadlock otherwise). Actor calls stay: they must run here, in order."""
        self.blocked = blocked
        if not blocked:
            return
        for caller, task, *_ in self._take_queued(lambda caller: True):
            self._bounce(caller, task)

    def _on_steal(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        """The owner has a free worker while its tasks wait here behind a long one: they go
        back to it (the running task stays). Its other callers' tasks keep their places."""
        for caller, task, *_ in self._take_queued(lambda caller: caller == conn.peer):
            self.send(
                caller,
                {
                    "t": "done",
                    "tid": task["tid"],
                    "att": task["att"],
                    "bounce": True,
                    "stolen": True,
                },
            )

    def _take_queued(self, wanted: Any) -> list[Any]:
        """Remove and return the queued task pushes whose caller ``wanted(caller)`` accepts;
        everything else (actor work, the stop marker, other callers' tasks) keeps its order."""
        taken: list[Any] = []
        keep: list[Any] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1]["t"] == "push" and wanted(item[0]):
                taken.append(item)
            else:
                keep.append(item)
        for item in keep:
            self.queue.put(item)
        return taken

    def _caller_lost(self, peer: str, conn: Connection) -> None:
        """The owner of queued or running tasks died: they are cancelled (fate-sharing)."""
        self.dead_callers.add(peer)
        tid = self.current
        if tid is not None and self.current_caller == peer and self._main is not None:
            self.cancelled.add(tid)
            signal.pthread_kill(self._main, signal.SIGINT)

    def _bounce(self, caller: str, h: dict[str, Any]) -> None:
        self.send(caller, {"t": "done", "tid": h["tid"], "att": h["att"], "bounce": True})

    def _on_push(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        if self.blocked and h["t"] == "push" and self.current is not None:
            self._bounce(conn.peer or "", h)
            return
        fn_bytes = None
        if "fnlen" in h:
            n = h["fnlen"]
            fn_bytes, payload = payload[:n], payload[n:]
        self.queue.put((conn.peer, h, payload, fn_bytes))

    def _on_cancel(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        tid = h["tid"]
        self.cancelled.add(tid)
        if self.current == tid and self._main is not None:
            signal.pthread_kill(self._main, signal.SIGINT)

    def on_sigint(self, signum: int, frame: Any) -> None:
        """SIGINT handler: interrupt the running task only if it was cancelled."""
        if self.current is not None and self.current in self.cancelled:
            raise KeyboardInterrupt

    def stop(self) -> None:
        self.queue.put(None)

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self._execute(*item)

    def _execute(
        self, caller: str, h: dict[str, Any], payload: bytes, fn_bytes: bytes | None
    ) -> None:
        if h["t"] != "push":
            self.actor_host().handle(caller, h, payload, fn_bytes)
            return
        tid = h["tid"]
        reply: dict[str, Any] = {"t": "done", "tid": tid, "att": h["att"]}
        if caller in self.dead_callers:
            return  # its owner died: nobody wants the result
        if tid in self.cancelled:
            self.send(caller, reply, error=TaskCancelledError(h["name"], tid.hex()))
            return
        fn = self.function(h["fn"], fn_bytes, bool(h.get("fnrefs")))
        if fn is None:
            reply["need_fn"] = True
            self.send(caller, reply)
            return

        def call() -> Any:
            args, kwargs = self._arguments(h, payload)
            return fn(*args, **kwargs)

        self.invoke(caller, h, call, main_thread=True)

    def invoke(self, caller: str, h: dict[str, Any], call: Any, main_thread: bool) -> None:
        """Run ``call`` as task ``h`` for ``caller``; store its results and reply, errors
        included. ``main_thread`` marks runs that a cancel may interrupt with SIGINT."""
        core = self.core
        tid, name, attempt = h["tid"], h["name"], h["att"]
        reply: dict[str, Any] = {"t": "done", "tid": tid, "att": attempt}
        if core.events.enabled:
            self.unannounced[tid] = (attempt, time.time())
        result: Any = None
        try:
            if main_thread:
                self.current = tid
                self.current_caller = caller
            output = core.output.begin(tid, name, caller, h.get("out"))
            try:
                result = call()
            finally:
                if main_thread:
                    self.current = None
                # Its prints go before its reply; after ``current`` is cleared, so a late
                # cancel cannot interrupt this send midway.
                core.output.end(output)
            values = self._split(result, h["nret"])
            try:
                rets, parts = self._store_returns(tid, values, caller)
            except SerializationError as exc:
                raise SerializationError(
                    f"the return value of task {name}() cannot be serialized: an object of type "
                    f"'{exc.type_name}' does not pickle. Return picklable data instead (convert "
                    "it, or define __reduce__ or __getstate__/__setstate__ on its class).",
                    exc.type_name,
                    f"return value of {name}",
                ) from exc
            self.send(caller, reply, rets=rets, payload=b"".join(parts))
        except KeyboardInterrupt as exc:
            error: BaseException = (
                TaskCancelledError(name, tid.hex())
                if tid in self.cancelled
                else TaskError.from_exception(name, exc, pid=os.getpid(), worker_id=core.proc)
            )
            self.send(caller, reply, error=error)
        except _ArgumentError as exc:
            self.send(caller, reply, error=exc.args[0])
        except MemlabError as exc:  # storing the result failed, or an actor is unusable
            self.send(caller, reply, error=exc)
        except BaseException as exc:
            self.send(
                caller,
                reply,
                error=TaskError.from_exception(name, exc, pid=os.getpid(), worker_id=core.proc),
            )
        finally:
            self.cancelled.discard(tid)
            self.unannounced.pop(tid, None)
            del result  # the refs it holds are released after the reply, in order

    def actor_host(self) -> Any:
        if self._actor_host is None:
            from memlab.runtime.worker.actor_host import ActorHost

            self._actor_host = ActorHost(self)
        return self._actor_host

    def function(self, fn_hash: bytes, fn_bytes: bytes | None, holds_refs: bool = False) -> Any:
        """The code ``fn_hash`` names, from the cache or unpickled from ``fn_bytes`` (actor
        classes too: ``ActorHost``)."""
        fn = self.functions.get(fn_hash)
        if fn is not None:
            self.functions.move_to_end(fn_hash)
            return fn
        blob = self.function_blobs.get(fn_hash)
        if blob is not None:
            self.function_blobs.move_to_end(fn_hash)
            return loads_function(blob)
        if fn_bytes is None:
            return None
        if holds_refs:
            self.function_blobs[fn_hash] = fn_bytes
            if len(self.function_blobs) > FUNCTION_CACHE_SIZE:
                self.function_blobs.popitem(last=False)
            return loads_function(fn_bytes)
        fn = loads_function(fn_bytes)
        self.functions[fn_hash] = fn
        if len(self.functions) > FUNCTION_CACHE_SIZE:
            self.functions.popitem(last=False)
        return fn

    def _arguments(
        self, h: dict[str, Any], payload: bytes
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        view = memoryview(payload)
        pos = 0
        values: list[Any] = []
        try:
            for dep in h["deps"]:
                if type(dep) is int:
                    values.append(deserialize(view[pos : pos + dep]))
                    pos += dep
                else:
                    values.append(self._read_stored(dep[0], dep[1]))
            if pos == len(view):
                return (), {}
            unpacked: Any = deserialize(view[pos:])
            args, kwargs = unpacked
        except MemlabError as exc:
            raise _ArgumentError(exc) from exc
        if values:
            args = tuple(values[a.i] if type(a) is ArgRef else a for a in args)
            kwargs = {k: values[v.i] if type(v) is ArgRef else v for k, v in kwargs.items()}
        return args, kwargs

    def _read_stored(self, oid: bytes, node: str) -> Any:
        from memlab.exceptions import ObjectLostError

        assert self.core.store is not None
        found, value = self.core.store.read(oid, node)
        if not found:
            raise ObjectLostError(oid.hex(), "its copy in shared memory is gone")
        return value

    @staticmethod
    def _split(result: Any, nret: int) -> tuple[Any, ...]:
        if nret == 1:
            return (result,)
        try:
            values = tuple(result)
        except TypeError:
            values = None
        if values is None or len(values) != nret:
            got = "a non-iterable" if values is None else f"{len(values)} values"
            raise ValueError(
                f"the task returned {got} but was declared with num_returns={nret}; return a "
                f"tuple of exactly {nret} values or change num_returns"
            )
        return values

    def _store_returns(
        self, tid: bytes, values: tuple[Any, ...], caller: str
    ) -> tuple[list[Any], list[bytes]]:
        core = self.core
        rets: list[Any] = []
        parts: list[bytes] = []
        lent: list[list[Any]] = []
        try:
            for i, value in enumerate(values):
                sv = serialize(value)
                refs = sv.contained_refs
                contained = self._lend(refs, caller) if refs else []
                lent.append(contained)
                if sv.total_size <= core.inline_threshold:
                    data = sv.to_bytes()
                    rets.append(["i", len(data), contained])
                    parts.append(data)
                else:
                    rets.append(["s", sv.total_size, contained, core.node_id])
                    assert core.store is not None
                    core.store.write(object_id(tid, i), sv, caller, wait=ROOM_WAIT)
        except BaseException:
            self._unlend(lent, caller)
            raise
        return rets, parts

    def _unlend(self, lent: list[list[Any]], caller: str) -> None:
        """The reply becomes an error, so the caller never learns of these loans: take back
        what ``_lend`` did (a pin here, or a registration of the caller at the owner)."""
        core = self.core
        releases: dict[str, list[bytes]] = {}
        with core.lock:
            for contained in lent:
                for oid, owner in contained:
                    if caller == core.proc:
                        core.refcounting.apply(core.table.remove_local(oid))
                    elif owner == core.proc:
                        core.refcounting.apply(core.table.remove_borrower(oid, caller))
                    elif owner != caller:
                        releases.setdefault(owner, []).append(oid)
        for owner, oids in releases.items():  # after the acked add_borrower, on its connection
            try:
                core.conn_to(owner).send(
                    {"t": "release_borrow", "oids": oids, "counts": [1] * len(oids), "for": caller}
                )
            except ConnectionClosedError:
                pass  # the owner is gone, and its table with it

    def _lend(self, refs: list[Any], caller: str) -> list[list[Any]]:
        core = self.core
        seen: dict[bytes, str] = {}
        for ref in refs:
            seen[ref.binary] = ref.owner
        for oid, owner in seen.items():
            if caller == core.proc:
                # The task ran in its own owner (a worker leased to itself): no other process
                # is involved, but this thread drops the result right after the reply is sent,
                # while the reply still waits for this process's reader thread. An extra local
                # count bridges that gap; the submitter drops it once the reply is applied.
                with core.lock:
                    core.refcounting.apply(core.table.add_local(oid, owner)[1])
            elif owner == core.proc:
                with core.lock:
                    core.refcounting.apply(core.table.add_borrower(oid, caller))
            elif owner != caller:
                core.conn_to(owner).request(
                    {"t": "add_borrower", "oid": oid, "borrower": caller}, timeout=30
                )
        return [[oid, owner] for oid, owner in seen.items()]

    def send(
        self,
        caller: str,
        reply: dict[str, Any],
        error: BaseException | None = None,
        rets: list[Any] | None = None,
        payload: bytes = b"",
    ) -> None:
        """Send a task's reply (or its error) to ``caller``, with its start if unannounced."""
        core = self.core
        started = self.unannounced.pop(reply["tid"], None)
        if started is not None:  # ended before a flush announced it: the owner reports the start
            reply["st"], reply["nd"] = started[1], core.node_id
        if error is not None:
            reply["err"] = True
            payload = dumps_error(error)
        elif rets is not None:
            reply["rets"] = rets
        # The task's end is reported by its owner (task.finished / failed / cancelled), which
        # alone knows whether it will be retried; one source keeps the event stream consistent.
        try:
            core.conn_to(caller).send(reply, payload)
        except ConnectionClosedError:
            pass  # the owner is gone; so is everything it would have done with the result
