"""The public surface is deliberate: this test pins it, so a change to it is a conscious one."""

from __future__ import annotations

import pickle

import memlab
import memlab.exceptions

EXPECTED = {
    "ActorDiedError",
    "ActorHandle",
    "GetTimeoutError",
    "MemlabError",
    "ObjectLostError",
    "ObjectRef",
    "ObjectReconstructionFailedError",
    "ObjectStoreFullError",
    "OwnerDiedError",
    "RuntimeConflictError",
    "RuntimeNotStartedError",
    "SerializationError",
    "StaleRefError",
    "TaskCancelledError",
    "TaskError",
    "WorkerCrashedError",
    "__version__",
    "cancel",
    "dashboard",
    "get",
    "get_actor",
    "init",
    "kill",
    "is_initialized",
    "put",
    "remote",
    "shutdown",
    "state",
    "wait",
}


def test_import_memlab_does_not_import_widget_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, memlab; bad = [m for m in ('ipywidgets', 'anywidget', 'IPython') "
        "if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, f"import memlab imported {done.stdout.strip()}"


def test_exports_are_pinned() -> None:
    assert set(memlab.__all__) == EXPECTED
    for name in memlab.__all__:
        assert hasattr(memlab, name), name


def test_exceptions_are_reexported_from_one_module() -> None:
    for name in memlab.__all__:
        obj = getattr(memlab, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert getattr(memlab.exceptions, name) is obj


def test_state_module_api() -> None:
    for fn in (
        "objects",
        "tasks",
        "workers",
        "nodes",
        "events",
        "ownership_graph",
        "subscribe",
        "view",
    ):
        assert callable(getattr(memlab.state, fn))


def test_api_before_init_says_what_to_call() -> None:
    assert not memlab.is_initialized()
    for call in (lambda: memlab.put(1), lambda: memlab.state.objects()):
        try:
            call()
        except memlab.RuntimeNotStartedError as exc:
            assert "memlab.init()" in str(exc)
            pickle.loads(pickle.dumps(exc))
        else:
            raise AssertionError("expected RuntimeNotStartedError")


def test_actor_options_on_a_function_and_task_options_on_a_class_are_refused() -> None:
    import pytest

    with pytest.raises(TypeError, match="actor options"):
        memlab.remote(max_restarts=2)(lambda x: x)
    with pytest.raises(TypeError, match="options of remote functions"):
        memlab.remote(num_returns=2)(type("C", (), {}))
    with pytest.raises(ValueError, match="max_restarts must be an int >= 0, or -1"):
        memlab.remote(max_restarts=-2)(type("K", (), {}))
    with pytest.raises(TypeError, match="cannot be instantiated directly"):
        memlab.remote(type("D", (), {}))()
