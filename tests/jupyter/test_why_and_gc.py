"""``%memlab why`` for each kind of holder, ``%memlab gc`` of the output history, and call
sites named after cells."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from IPython.core.error import UsageError

import memlab.state as st
from memlab.jupyter.why import explain
from memlab.testing import wait_for
from tests.jupyter.conftest import cell, run


def _index(ip: Any) -> Any:
    return ip.magics_manager.registry["MemlabMagics"].holders


def _why(ip: Any, target: str) -> Any:
    index = _index(ip)
    index.invalidate()
    return explain(target, ip, index)


def _seen(oid: str) -> None:
    wait_for(
        lambda: any(o["object_id"] == oid for o in st.objects()),
        10,
        message=f"object {oid[:12]} in memlab.state",
    )


def test_call_site_names_the_cell(ip: Any) -> None:
    run(ip, "import memlab")
    run(ip, "a = 1\nx = memlab.put(b'v')")
    number = ip.execution_count - 1
    oid = run(ip, "x.hex()")
    _seen(oid)
    rec = next(o for o in st.objects() if o["object_id"] == oid)
    assert rec["call_site"] == f"Cell In[{number}], line 2"
    created = [e for e in st.events(kinds=["object.created"]) if e["object_id"] == oid]
    assert created[0]["call_site"] == f"Cell In[{number}], line 2"


def test_call_site_of_a_task_names_the_cell(ip: Any) -> None:
    run(ip, "import memlab\n@memlab.remote\ndef f():\n    return 1")
    run(ip, "a = 1\nb = 2\nr = f.remote()")
    number = ip.execution_count - 1
    oid = run(ip, "memlab.get(r); r.hex()")
    wait_for(lambda: any(t["task_id"] == oid[:24] for t in st.tasks()), 10)
    task = next(t for t in st.tasks() if t["task_id"] == oid[:24])
    assert task["call_site"] == f"Cell In[{number}], line 3"


def test_why_variable_and_containers(ip: Any) -> None:
    run(
        ip,
        """
import memlab
x = memlab.put(b'v')
parts = [0, 1, x]
t = (x,)
d = {'key': x}
s = {x}
class Box: pass
box = Box(); box.ref = x
""",
    )
    _seen(run(ip, "x.hex()"))
    text = _why(ip, "x").text()
    for name in (
        "notebook variable x",
        "notebook variable parts[2]",
        "t[0]",
        "d['key']",
        "s{",
        "box.ref",
    ):
        assert name in text, text
    assert _why(ip, "parts[2]").object_id == run(ip, "x.hex()")  # an expression resolves too


def test_why_out_history(ip: Any) -> None:
    run(ip, "import memlab")
    cell(ip, "memlab.put(b'only in Out')")  # the cell's value lands in Out[N] and _
    number = ip.execution_count - 1
    oid = ip.user_ns["Out"][number].hex()
    _seen(oid)
    why = _why(ip, oid[:10])
    assert {"history"} == {h.kind for h in why.holders}
    assert f"Out[{number}]" in why.text()
    assert "%memlab gc drops it" in why.text()


def test_gc_frees_refs_held_only_by_the_history(ip: Any, capsys: Any) -> None:
    run(ip, "import memlab, numpy as np\nkeep = memlab.put(np.ones(100_000))")
    cell(ip, "memlab.put(np.zeros(200_000))")
    cell(ip, "keep")  # Out also holds a ref a variable holds: that one must stay
    dropped = ip.user_ns["Out"][ip.execution_count - 2].hex()
    kept = run(ip, "keep.hex()")
    _seen(dropped)
    capsys.readouterr()
    ip.run_line_magic("memlab", "gc")
    out = capsys.readouterr().out
    assert "freed 1 object(s), 1.5 MiB" in out, out
    live = {o["object_id"] for o in st.objects()}
    assert dropped not in live and kept in live
    assert run(ip, "keep.hex()") == kept
    ip.run_line_magic("memlab", "gc")
    assert "Nothing to collect" in capsys.readouterr().out


def test_why_and_gc_of_the_last_traceback(ip: Any, capsys: Any) -> None:
    run(
        ip,
        """
import memlab
def fails():
    held = memlab.put(b'in a frame')
    raise ValueError(held.hex())
""",
    )
    cell(ip, "fails()")
    oid = str(sys.last_value)
    _seen(oid)
    why = _why(ip, oid)
    assert "the last traceback: fails() local held" in why.text(), why.text()
    ip.run_line_magic("memlab", "gc")
    assert "freed 1 object(s)" in capsys.readouterr().out
    assert oid not in {o["object_id"] for o in st.objects()}


def test_why_pending_task(ip: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    run(
        ip,
        f"""
import memlab
from memlab.testing import wait_for_file
@memlab.remote
def slow(v):
    wait_for_file({str(gate)!r})
    return len(v)
@memlab.remote
def user(v, ready):
    return len(v)
x = memlab.put(b'arg')
blocker = slow.remote(b'')
r = user.remote(x, blocker)
oid = x.hex()
del x
""",
    )
    oid = ip.user_ns["oid"]
    wait_for(lambda: any(o["object_id"] == oid and o["holders"]["tasks"] for o in st.objects()), 10)
    text = _why(ip, oid).text()
    assert "argument of pending task user submitted at Cell In[" in text, text
    assert "nothing in this kernel holds it" not in text
    gate.write_text("go")
    assert run(ip, "memlab.get(r)") == 3


def test_why_containing_object_recursively(ip: Any) -> None:
    run(
        ip,
        """
import memlab
inner = memlab.put(b'inner')
outer = memlab.put([inner])
outermost = memlab.put({'o': outer})
oid = inner.hex()
del inner
""",
    )
    oid = ip.user_ns["oid"]
    outer = run(ip, "outer.hex()")
    wait_for(
        lambda: any(o["object_id"] == oid and o["holders"]["contained_in"] for o in st.objects()),
        10,
    )
    text = _why(ip, oid).text()
    assert f"inside object {outer[:12]}" in text, text
    assert "notebook variable outer" in text
    assert "notebook variable outermost" in text  # outer is itself inside outermost


def test_why_borrowing_worker_and_actor_handle(ip: Any, tmp_path: Any) -> None:
    run(
        ip,
        """
import memlab
@memlab.remote
class Keeper:
    def keep(self, refs):
        self.refs = refs
        return len(refs)
keeper = Keeper.remote()
x = memlab.put(b'kept by an actor')
assert memlab.get(keeper.keep.remote([x])) == 1
oid = x.hex()
del x
""",
    )
    oid = ip.user_ns["oid"]
    wait_for(
        lambda: any(
            o["object_id"] == oid and o["holders"]["borrowers"] and not o["holders"]["local"]
            for o in st.objects()
        ),
        10,
    )
    actor_id = run(ip, "keeper._actor_id.hex()")
    wait_for(lambda: any(a["actor_id"] == actor_id and a["worker"] for a in st.actors()), 10)
    why = _why(ip, oid)
    text = why.text()
    assert "actor" in why.kinds() and "handle" in why.kinds(), text
    assert "actor handle keeper in the notebook keeps the actor alive" in text
    run(ip, "memlab.kill(keeper)")


def test_why_borrowing_worker_running_a_task(ip: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    run(
        ip,
        f"""
import memlab
from memlab.testing import wait_for_file
@memlab.remote
def hold(refs):
    wait_for_file({str(gate)!r})
    return len(refs)
x = memlab.put(b'borrowed')
r = hold.remote([x])
oid = x.hex()
del x
""",
    )
    oid = ip.user_ns["oid"]
    wait_for(
        lambda: any(o["object_id"] == oid and o["holders"]["borrowers"] for o in st.objects()), 10
    )
    wait_for(lambda: any(t["name"] == "hold" and t["state"] == "running" for t in st.tasks()), 10)
    text = _why(ip, oid).text()
    assert "borrowed by worker w-" in text and "running hold (submitted at Cell In[" in text, text
    gate.write_text("go")
    assert run(ip, "memlab.get(r)") == 1


def test_why_object_held_only_by_another_process(ip: Any) -> None:
    run(
        ip,
        """
import memlab
@memlab.remote
class Owner:
    def make(self):
        self.mine = memlab.put(b'owned by the actor')
        return self.mine.hex()
owner = Owner.remote()
oid = memlab.get(owner.make.remote())
""",
    )
    oid = ip.user_ns["oid"]
    _seen(oid)
    text = _why(ip, oid).text()
    assert "nothing in this kernel holds it; process(es) w-" in text, text
    run(ip, "memlab.kill(owner)")


def test_why_unknown_target_says_what_it_looked_for(ip: Any) -> None:
    with pytest.raises(UsageError, match="looked for a notebook name 'nope'"):
        ip.run_line_magic("memlab", "why nope")
    with pytest.raises(UsageError, match="an object id starting with 'abcdef'"):
        ip.run_line_magic("memlab", "why abcdef")
    run(ip, "n = 3")
    with pytest.raises(UsageError, match="n is a int, not an ObjectRef"):
        ip.run_line_magic("memlab", "why n")


def test_why_magic_prints_the_chain(ip: Any, capsys: Any) -> None:
    run(ip, "import memlab\nx = memlab.put(b'v')")
    _seen(run(ip, "x.hex()"))
    capsys.readouterr()
    ip.run_line_magic("memlab", "why x")
    out = capsys.readouterr().out
    assert out.startswith("object ") and "└── notebook variable x" in out


def test_gc_drops_a_container_in_the_history(ip: Any, capsys: Any) -> None:
    run(ip, "import memlab")
    cell(ip, "[memlab.put(b'a'), memlab.put(b'b')]")
    number = ip.execution_count - 1
    held = [r.hex() for r in ip.user_ns["Out"][number]]
    for oid in held:
        _seen(oid)
    assert f"Out[{number}][1]" in _why(ip, held[1]).text()
    capsys.readouterr()
    ip.run_line_magic("memlab", "gc")
    assert "freed 2 object(s)" in capsys.readouterr().out
    assert not set(held) & {o["object_id"] for o in st.objects()}
