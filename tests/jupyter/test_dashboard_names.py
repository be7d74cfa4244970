"""The dashboard names the notebook variables that hold each object (``%load_ext memlab``'s
holder attribution is its default names provider)."""

from __future__ import annotations

from typing import Any

from memlab.testing import wait_for
from tests.jupyter.conftest import run


def test_the_objects_table_shows_the_notebook_names_holding_them(ip: Any) -> None:
    run(
        ip,
        "import memlab\n"
        "parts = [memlab.put(b'x' * 200_000) for _ in range(3)]\n"
        "big = memlab.put(b'y' * 300_000)",
    )
    run(ip, "board = memlab.dashboard()")
    board = ip.user_ns["board"]
    try:
        parts, big = ip.user_ns["parts"], ip.user_ns["big"]

        def names() -> dict[str, list[str]]:
            return {r["object_id"]: r["names"] for r in board.state.rows("objects")}

        wait_for(lambda: names().get(big.hex()) == ["big"], 10, message="big named")
        assert names()[parts[2].hex()] == ["parts[2]"]
        html = board._repr_mimebundle_()[0]["text/html"]
        assert "parts[2]" in html, "the static snapshot shows the names too"
    finally:
        board.close()
