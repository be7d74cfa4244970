"""Actors: the owner's record of each actor it created, and every caller's view of an actor.

Owns, per process, ``records`` (actors this process created: where each runs, its restarts, why
it died) and ``views`` (actors this process calls: their worker as last known, the calls not yet
sent and the calls in flight). The owner is the directory: a caller that does not know where an
actor runs asks its owner (``actor_where``) and is told once it runs (``actor_at``) or is dead.

Life of an actor (owner side)::

    starting ──► alive ──► restarting ──► alive ... ──► dead (max_restarts spent, killed,
        (its worker died: a new worker, __init__ again)     out of scope, or __init__ failed)

An actor lives while a handle to it does: the handle carries the ref of its creation task, so
the ordinary borrower protocol counts handles in every process; when that ref is freed the
actor is killed. An actor runs on a worker of its own, which the node manager kills when the
owner dies (fate-sharing).

Calls from one caller are sent in submission order over one connection and run in that order.
A call in flight when the actor's worker dies is resent after the restart while
``max_task_retries`` allows, else it fails with ``ActorDiedError``.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from memlab.exceptions import ActorDiedError, ConnectionClosedError
from memlab.runtime.coreworker.memory_store import run_wakeups
from memlab.runtime.coreworker.placement import AFFINITY, actor_node, not_alive

if TYPE_CHECKING:
    from memlab.protocol.transport import Connection
    from memlab.runtime.coreworker.core_worker import CoreWorker
    from memlab.runtime.coreworker.task_spec import TaskSpec


class ActorRecord:
    """Owner side."""

    def __init__(
        self, actor_id: bytes, cls_name: str, creation: TaskSpec, options: dict[str, Any]
    ) -> None:
        self.actor_id = actor_id
        self.cls_name = cls_name
        self.creation = creation
        self.max_restarts: int = options["max_restarts"]
        self.max_concurrency: int = options["max_concurrency"]
        self.name: str | None = options.get("name")
        self.state = "starting"
        self.worker: str | None = None
        self.node: str | None = None
        self.restarts = 0
        self.reason = ""
        self.no_restart = False
        self.start_failures = 0
        self.watchers: set[str] = set()


class ActorView:
    """Caller side."""

    def __init__(self, actor_id: bytes, owner: str, cls_name: str) -> None:
        self.actor_id = actor_id
        self.owner = owner
        self.cls_name = cls_name
        self.worker: str | None = None
        self.state = "unknown"  # unknown -> alive -> (unknown ...) -> dead
        self.reason = ""
        self.asked = False
        self.pending: deque[TaskSpec] = deque()
        self.inflight: dict[bytes, TaskSpec] = {}


class ActorManager:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self.records: dict[bytes, ActorRecord] = {}
        self.views: dict[bytes, ActorView] = {}
        self.by_creation: dict[bytes, bytes] = {}  # creation object id -> actor id
        self._lids = itertools.count(1)
        self._starting: dict[int, tuple[bytes, str]] = {}  # lease id -> (actor, node asked)
        self._node_turn = 0
        # Driver only: name -> (pickled handle, actor id, owner). A name is free again once its
        # actor is dead (killed, out of restarts, or its owner died), as in Ray.
        self.names: dict[str, tuple[bytes, bytes, str]] = {}
        self.named_handles: dict[str, Any] = {}  # owner: named actors live until killed
        for kind, handler in (
            ("actor_where", self._on_where),
            ("actor_at", self._on_at),
            ("actor_kill", self._on_kill),
            ("actor_name", self._on_name),
            ("actor_lookup", self._on_lookup),
            ("actor_unname", self._on_unname),
            ("actor_start_failed", self._on_start_failed),
        ):
            core.peers.register(kind, handler)
        core.peers.on_peer_lost(self._peer_lost)

    def _peer_lost(self, peer: str, conn: Connection) -> None:
        if any(v.worker == peer for v in self.views.values()) or any(
            r.worker == peer for r in self.records.values()
        ):
            self.lost(peer)

    def lost(self, worker: str) -> None:
        """The connection to ``worker`` closed. The node manager's ``worker_died`` (exit code,
        signal, likely cause) normally follows at once and reaches ``worker_died`` through
        ``process_died``; wait for it briefly, so the ActorDiedError can say why it died."""
        info = self.core.dead.get(worker)
        if info is not None:
            self.worker_died(worker, info)
            return
        from memlab.runtime.coreworker.task_failures import CRASH_INFO_WAIT

        timer = threading.Timer(CRASH_INFO_WAIT, self._no_word, args=(worker,))
        timer.daemon = True
        timer.start()

    def _no_word(self, worker: str) -> None:
        if worker not in self.core.dead:  # else process_died handled it, with the cause
            self.worker_died(worker, None)

    # -- names (the driver keeps the registry) -------------------------------------------------

    def register_name(self, name: str, handle_bytes: bytes, actor_id: bytes) -> bool:
        if self.core.kind == "driver":
            return self._register(name, handle_bytes, actor_id, self.core.proc)
        reply, _ = self.core.conn_to(self.core.driver).request(
            {"t": "actor_name", "name": name, "aid": actor_id}, handle_bytes, timeout=30
        )
        return bool(reply["ok"])

    def _register(self, name: str, handle_bytes: bytes, actor_id: bytes, owner: str) -> bool:
        with self.core.lock:
            if name in self.names:
                return False
            self.names[name] = (handle_bytes, actor_id, owner)
            return True

    def lookup_name(self, name: str) -> bytes | None:
        if self.core.kind == "driver":
            entry = self.names.get(name)
            return None if entry is None else entry[0]
        reply, payload = self.core.conn_to(self.core.driver).request(
            {"t": "actor_lookup", "name": name}, timeout=30
        )
        return payload if reply["found"] else None

    def _release_name(self, record: ActorRecord) -> None:
        """The named actor ``record`` is dead: its name may be taken again."""
        name = record.name
        if name is None:
            return
        handle = self.named_handles.get(name)
        if handle is not None and handle._actor_id == record.actor_id:
            del self.named_handles[name]
        if self.core.kind == "driver":
            self._unname(name, record.actor_id)
        else:
            self.core.send_later(
                self.core.driver, {"t": "actor_unname", "name": name, "aid": record.actor_id}
            )

    def _unname(self, name: str, actor_id: bytes) -> None:
        with self.core.lock:
            entry = self.names.get(name)
            if entry is not None and entry[1] == actor_id:  # not a later actor of that name
                del self.names[name]

    def _on_name(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        ok = self._register(h["name"], payload, h["aid"], conn.peer or "")
        conn.reply(h, {"t": "actor_named", "ok": ok})

    def _on_unname(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        self._unname(h["name"], h["aid"])

    def _on_lookup(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        entry = self.names.get(h["name"])
        data = None if entry is None else entry[0]
        conn.reply(h, {"t": "actor_found", "found": data is not None}, data or b"")

    # -- owner side ----------------------------------------------------------------------------

    def created(self, record: ActorRecord) -> None:
        """Register a new actor (its creation spec is registered with the submitter)."""
        if record.creation.node_affinity is None:
            record.creation.node_affinity = AFFINITY.get()
        with self.core.lock:
            self.records[record.actor_id] = record
            self.by_creation[record.creation.returns[0]] = record.actor_id
            self.view(record.actor_id, self.core.proc, record.cls_name)
            self._start(record)
        self.core.drain_outbox()

    def _start(self, record: ActorRecord) -> None:
        affinity = record.creation.node_affinity
        node = actor_node(affinity, self.core.nodes, self._node_turn)
        if node is None:  # bound to a node that is not alive (a hard affinity)
            assert affinity is not None
            why = not_alive(affinity.node, self.core.dead)
            run_wakeups(self._die(record, f"it must run on node {affinity.node!r}, which {why}"))
            return
        self._node_turn += 1
        lid = next(self._lids)
        self._starting[lid] = (record.actor_id, node)
        self.core.send_later(node, {"t": "actor_lease", "lid": lid})

    def start_failed(self, lid: int, reason: str) -> None:
        """The node could not give the actor a worker (it died starting, or the node died)."""
        with self.core.lock:
            started = self._starting.pop(lid, None)
            record = self.records.get(started[0]) if started else None
            if record is not None and record.state != "dead":
                record.start_failures += 1
                if record.start_failures > 3:
                    run_wakeups(self._die(record, f"its worker failed to start: {reason}"))
                else:
                    self._start(record)
        self.core.drain_outbox()

    def node_died(self, node: str) -> None:
        for lid, (_, asked) in list(self._starting.items()):
            if asked == node:
                self.start_failed(lid, f"node {node} died")

    def _on_start_failed(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        self.start_failed(h["lid"], h.get("reason", "its worker exited before it was ready"))

    def on_granted(self, conn: Connection, h: dict[str, Any]) -> None:
        """A worker of its own is ready for an actor: construct it there, then serve calls."""
        with self.core.lock:
            started = self._starting.pop(h["lid"], None)
            record = self.records.get(started[0]) if started is not None else None
            if record is None or record.state == "dead":
                self.core.send_later(conn.peer or "", {"t": "kill_worker", "worker": h["worker"]})
                to_push: list[Any] = []
            else:
                record.worker, record.node, record.state = h["worker"], conn.peer, "alive"
                if record.restarts and self.core.events.enabled:
                    self.core.events.emit(
                        "actor.restarted",
                        actor_id=record.actor_id.hex(),
                        name=record.cls_name,
                        worker=record.worker,
                        restarts=record.restarts,
                    )
                spec = record.creation
                spec.worker = record.worker
                self.core.submitter.tasks[spec.task_id] = spec
                to_push = [(record.worker, spec)]
                to_push += self._announce(record)
        self.core.drain_outbox()
        self.core.submitter.push_all(to_push)

    def _announce(self, record: ActorRecord) -> list[Any]:
        """Tell the owner's own view and every waiting caller where (or whether) it runs."""
        msg: dict[str, Any] = {"t": "actor_at", "aid": record.actor_id}
        if record.state == "dead":
            msg["dead"] = record.reason
        else:
            msg["worker"] = record.worker
        for peer in record.watchers:
            self.core.send_later(peer, msg)
        record.watchers.clear()
        return self._learn(record.actor_id, msg)

    def creation_failed(self, spec: TaskSpec, error: BaseException | None) -> None:
        record = self.records.get(spec.actor[0]) if spec.actor else None
        if record is not None and record.state != "dead":
            if record.worker is not None and record.node is not None:
                # The worker is alive but hosts no instance: it is no use to anyone.
                self.core.send_later(record.node, {"t": "kill_worker", "worker": record.worker})
            self._die(record, f"its constructor failed: {error}")

    def _die(self, record: ActorRecord, reason: str) -> list[Any]:
        record.state, record.reason, record.worker = "dead", reason, None
        record.creation.captured = ()  # no restart will unpickle its class again
        self._release_name(record)
        ev = self.core.events
        if ev.enabled:
            ev.emit(
                "actor.died",
                actor_id=record.actor_id.hex(),
                name=record.cls_name,
                worker=None,
                reason=reason,
            )
        return self._announce(record)

    def _on_where(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        with self.core.lock:
            record = self.records.get(h["aid"])
            if record is None:
                self.core.send_later(
                    conn.peer or "",
                    {
                        "t": "actor_at",
                        "aid": h["aid"],
                        "dead": f"its owner {self.core.proc} no longer has it",
                    },
                )
            elif record.state in ("alive", "dead"):
                record.watchers.add(conn.peer or "")
                self._announce(record)
            else:
                record.watchers.add(conn.peer or "")
        self.core.drain_outbox()

    def kill(self, actor_id: bytes, owner: str, no_restart: bool) -> None:
        if owner != self.core.proc:
            self.core.conn_to(owner).send(
                {"t": "actor_kill", "aid": actor_id, "no_restart": no_restart}
            )
            return
        with self.core.lock:
            record = self.records.get(actor_id)
            if record is None or record.state == "dead":
                return
            record.no_restart = record.no_restart or no_restart
            if record.worker is not None and record.node is not None:
                self.core.send_later(record.node, {"t": "kill_worker", "worker": record.worker})
            elif no_restart:
                run_wakeups(self._die(record, "it was killed with memlab.kill()"))
        self.core.drain_outbox()

    def _on_kill(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        self.kill(h["aid"], self.core.proc, h["no_restart"])

    def out_of_scope(self, creation_oid: bytes) -> None:
        """Called with the lock held when an actor's creation ref is freed: no handle is left."""
        aid = self.by_creation.pop(creation_oid, None)
        record = self.records.get(aid) if aid is not None else None
        if record is None or record.state == "dead":
            return
        record.no_restart = True
        record.reason = "every handle to it went out of scope"
        if record.worker is not None and record.node is not None:
            self.core.send_later(record.node, {"t": "kill_worker", "worker": record.worker})
        else:  # still starting or restarting: on_granted kills the worker it gets
            run_wakeups(self._die(record, record.reason))

    # -- caller side ---------------------------------------------------------------------------

    def view(self, actor_id: bytes, owner: str, cls_name: str) -> ActorView:
        view = self.views.get(actor_id)
        if view is None:
            view = self.views[actor_id] = ActorView(actor_id, owner, cls_name)
        return view

    def call(self, spec: TaskSpec, owner: str, cls_name: str) -> None:
        """Queue a registered method-call spec and send what can be sent, in order."""
        with self.core.lock:
            view = self.view(spec.actor[0], owner, cls_name)  # type: ignore[index]
            view.pending.append(spec)
            to_push = self._flush(view)
        self.core.drain_outbox()
        self.core.submitter.push_all(to_push)

    def _flush(self, view: ActorView) -> list[Any]:
        to_push: list[Any] = []
        if view.state == "alive":
            while view.pending:
                spec = view.pending.popleft()
                if spec.cancelled:
                    continue
                spec.worker = view.worker
                view.inflight[spec.task_id] = spec
                to_push.append((view.worker, spec))
        elif view.state == "dead":
            wake: list[Any] = []
            while view.pending:
                spec = view.pending.popleft()
                wake += self.core.submitter.fail(
                    spec, ActorDiedError(view.cls_name, view.actor_id.hex(), view.reason)
                )
            run_wakeups(wake)
        elif view.owner in self.core.dead:
            view.state, view.reason = "dead", f"its owner {view.owner} died"
            return self._flush(view)
        elif not view.asked and view.owner != self.core.proc:
            view.asked = True
            self.core.send_later(view.owner, {"t": "actor_where", "aid": view.actor_id})
        return to_push

    def _on_at(self, conn: Connection, h: dict[str, Any], payload: bytes) -> None:
        with self.core.lock:
            to_push = self._learn(h["aid"], h)
        self.core.drain_outbox()
        self.core.submitter.push_all(to_push)

    def _learn(self, actor_id: bytes, h: dict[str, Any]) -> list[Any]:
        view = self.views.get(actor_id)
        if view is None:
            return []
        view.asked = False
        if "dead" in h:
            view.state, view.reason, view.worker = "dead", h["dead"], None
        else:
            view.state, view.worker = "alive", h["worker"]
        return self._flush(view)

    def done(self, spec: TaskSpec) -> None:
        view = self.views.get(spec.actor[0]) if spec.actor else None
        if view is not None:
            view.inflight.pop(spec.task_id, None)

    # -- failures ------------------------------------------------------------------------------

    def worker_died(self, worker: str, info: dict[str, Any] | None) -> None:
        cause = (info or {}).get("cause") or "its worker died"
        wake: list[Any] = []
        with self.core.lock:
            to_push: list[Any] = []
            for view in self.views.values():
                # A view that already learned its actor is dead (its constructor failed, it was
                # killed) no longer names the worker, but calls sent there may still be out.
                inflight = [s for s in view.inflight.values() if s.worker == worker]
                if view.worker != worker and not inflight:
                    continue
                if view.worker == worker:
                    view.worker, view.state = None, "unknown"
                retry: list[TaskSpec] = []
                for spec in inflight:
                    del view.inflight[spec.task_id]
                self.core.submitter.forget_results(worker, inflight)
                for spec in inflight:
                    if view.state == "dead":
                        wake += self.core.submitter.fail(
                            spec, ActorDiedError(view.cls_name, view.actor_id.hex(), view.reason)
                        )
                    elif spec.may_retry():
                        spec.attempt += 1
                        retry.append(spec)
                    else:
                        wake += self.core.submitter.fail(
                            spec,
                            ActorDiedError(
                                view.cls_name,
                                view.actor_id.hex(),
                                f"its worker {worker} died while the call ran ({cause}); "
                                "set max_task_retries to resend calls after a restart",
                            ),
                        )
                view.pending.extendleft(reversed(retry))
            for record in self.records.values():
                if record.worker == worker and record.state != "dead":
                    wake += self._restart_or_die(record, worker, cause)
            for view in self.views.values():
                to_push += self._flush(view)
        run_wakeups(wake)
        self.core.drain_outbox()
        self.core.submitter.push_all(to_push)

    def _restart_or_die(self, record: ActorRecord, worker: str, cause: str) -> list[Any]:
        record.worker = None
        if record.no_restart:
            why = record.reason or "it was killed with memlab.kill()"
            return self._die(record, why)
        if 0 <= record.max_restarts <= record.restarts:
            return self._die(
                record,
                f"its worker {worker} died ({cause}) and "
                f"max_restarts={record.max_restarts} is spent",
            )
        record.restarts += 1
        record.state = "restarting"
        record.creation.attempt += 1
        ev = self.core.events
        if ev.enabled:
            ev.emit(
                "actor.restarting",
                actor_id=record.actor_id.hex(),
                name=record.cls_name,
                worker=None,
                restarts=record.restarts,
                reason=f"worker {worker}: {cause}",
            )
        self._start(record)
        return []

    def owner_died(self, owner: str) -> None:
        """Actors fate-share with their owner: views of its actors learn they are dead, and
        the names they held are free again."""
        with self.core.lock:
            for name in [n for n, entry in self.names.items() if entry[2] == owner]:
                del self.names[name]
            for view in self.views.values():
                if view.owner == owner and view.state != "dead":
                    view.state, view.reason = "dead", f"its owner {owner} died"
                    if self.core.events.enabled:  # its owner cannot say so any more
                        self.core.events.emit(
                            "actor.died",
                            actor_id=view.actor_id.hex(),
                            name=view.cls_name,
                            worker=None,
                            reason=view.reason,
                        )
                    self._flush(view)

    def send_failed(self, worker: str) -> None:
        try:
            self.core.conn_to(worker)
        except ConnectionClosedError:
            self.lost(worker)
