"""The worker side of an actor: one instance, its method calls, their concurrency.

Owns the actor instance this worker hosts (a worker hosts at most one; it was started for it).
Calls run in arrival order on the main thread when ``max_concurrency`` is 1, which gives each
caller's calls in submission order; with more, they run on a thread pool of that size, and
``async def`` methods run on one event loop, up to ``max_concurrency`` at a time.

Top-level ObjectRef arguments are resolved here (a ``get`` in this worker, which borrows them)
before the method runs, as for tasks.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ActorDiedError
from memlab.runtime.coreworker.object_ref import ObjectRef
from memlab.serialization import deserialize

if TYPE_CHECKING:
    from memlab.runtime.worker.executor import Executor


class ActorHost:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.core = executor.core
        self.instance: Any = None
        self.init_error: BaseException | None = None
        self.actor_id = b""
        self.name = ""
        self.max_concurrency = 1
        self.pool: ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # Calls that arrived before the creation: another caller learns where the actor runs
        # as soon as its worker is granted, and its connection can overtake the owner's.
        self.created = False
        self.early: list[tuple[str, dict[str, Any], bytes]] = []

    def handle(
        self, caller: str, h: dict[str, Any], payload: bytes, fn_bytes: bytes | None
    ) -> None:
        if h["t"] == "actor_create":
            self._create(caller, h, payload, fn_bytes)
            if self.created:
                early, self.early = self.early, []
                for call in early:  # in arrival order, after the instance exists (or failed)
                    self._call(*call)
        elif not self.created:
            self.early.append((caller, h, payload))
        else:
            self._call(caller, h, payload)

    def _create(
        self, caller: str, h: dict[str, Any], payload: bytes, fn_bytes: bytes | None
    ) -> None:
        cls = self.executor.function(h["fn"], fn_bytes, bool(h.get("fnrefs")))
        if cls is None:
            self.executor.send(
                caller, {"t": "done", "tid": h["tid"], "att": h["att"], "need_fn": True}
            )
            return
        self.created = True
        self.actor_id = h["aid"]
        self.name = h["cls"]
        self.max_concurrency = int(h.get("maxc", 1))
        has_async = any(inspect.iscoroutinefunction(m) for _, m in inspect.getmembers(cls))
        if has_async:
            self.loop = asyncio.new_event_loop()
            threading.Thread(
                target=self.loop.run_forever, name="memlab-actor-loop", daemon=True
            ).start()
        if self.max_concurrency > 1 or has_async:
            self.pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="memlab-actor")

        def construct() -> None:
            args, kwargs = self._arguments(payload)
            try:
                self.instance = cls(*args, **kwargs)
            except BaseException as exc:
                self.init_error = exc
                raise
            ev = self.core.events
            if ev.enabled:
                ev.emit(
                    "actor.created",
                    actor_id=self.actor_id.hex(),
                    name=self.name,
                    worker=self.core.proc,
                    owner=caller,
                )

        self.executor.invoke(caller, h, construct, main_thread=True)

    def _call(self, caller: str, h: dict[str, Any], payload: bytes) -> None:
        name = h["method"]

        def call() -> Any:
            if self.instance is None:
                why = (
                    f"its constructor raised {self.init_error!r}"
                    if self.init_error
                    else "this worker hosts no instance of it"
                )
                raise ActorDiedError(self.name, self.actor_id.hex(), why)
            method = getattr(self.instance, name)
            args, kwargs = self._arguments(payload)
            result = method(*args, **kwargs)
            if inspect.iscoroutine(result):
                assert self.loop is not None
                return asyncio.run_coroutine_threadsafe(result, self.loop).result()
            return result

        if self.pool is not None:
            self.pool.submit(self.executor.invoke, caller, h, call, False)
        else:
            self.executor.invoke(caller, h, call, main_thread=True)

    def _arguments(self, payload: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if not payload:
            return (), {}
        unpacked: Any = deserialize(payload)
        args, kwargs = unpacked
        refs = [a for a in (*args, *kwargs.values()) if type(a) is ObjectRef]
        if not refs:
            return args, kwargs
        values = dict(zip(refs, self.core.get(refs)))
        args = tuple(values[a] if type(a) is ObjectRef else a for a in args)
        kwargs = {k: values[v] if type(v) is ObjectRef else v for k, v in kwargs.items()}
        return args, kwargs
