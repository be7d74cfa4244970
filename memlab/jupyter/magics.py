"""The ``%memlab`` line magic (subcommands) and the ``%%remote`` cell magic.

Every subcommand parses its own options with a ``MagicParser``: an unknown subcommand or option
prints the usage (IPython's ``UsageError``: one message, no traceback), and nothing in flight
is touched by a typo.
"""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from memlab.exceptions import EventsUnavailableError, RuntimeNotStartedError
from memlab.jupyter import history_gc, session_commands, tables
from memlab.jupyter.holders import HolderIndex
from memlab.jupyter.parsing import MagicParser

USAGE = """\
usage: %memlab SUBCOMMAND [options]

  start [--workers N] [--nodes K] [--memory 2GB]   start the runtime (or use the running one)
  stop                                             stop it: every process and segment goes
  status                                           workers, nodes and store memory
  dashboard                                        the live dashboard widget
  refs [--all]                                     the object table, with notebook holders
  events [--last N] [--kinds K,...]                the most recent events
  kill worker|node ID                              kill a worker or a node (fault injection)
  gc                                               drop refs held only by Out[], _ and tracebacks
  why NAME_OR_ID                                   what keeps an object alive, up to each root

and the cell magic:  %%remote [-o NAMES] [--block] [--timeout S] [--retries N] [--node ID]"""

_SIMPLE = {"stop", "status", "dashboard", "gc"}


def _no_options(name: str) -> MagicParser:
    return MagicParser(f"%memlab {name}")


@magics_class
class MemlabMagics(Magics):
    """``%memlab …`` and ``%%remote``; one instance per shell, holding its holder index."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.holders = HolderIndex(shell)

    @line_magic
    def memlab(self, line: str) -> Any:
        """Drive memlab from a notebook; ``%memlab`` alone prints the subcommands."""
        try:
            return self._memlab(line)
        except (RuntimeNotStartedError, EventsUnavailableError) as exc:
            raise UsageError(str(exc)) from None  # one sentence, not a traceback

    def _memlab(self, line: str) -> Any:
        command, _, rest = line.strip().partition(" ")
        if not command or command in ("help", "-h", "--help"):
            print(USAGE)
            return None
        if command == "start":
            session_commands.start(session_commands.start_parser().parse_line(rest))
        elif command in _SIMPLE:
            _no_options(command).parse_line(rest)
            self._simple(command)
        elif command == "refs":
            tables.refs(tables.refs_parser().parse_line(rest), self.holders)
        elif command == "events":
            tables.events(tables.events_parser().parse_line(rest))
        elif command == "kill":
            session_commands.kill(session_commands.kill_parser().parse_line(rest))
        elif command == "why":
            from memlab.jupyter import why

            why.why_magic(why.why_parser().parse_line(rest), self.shell, self.holders)
        else:
            raise UsageError(f"unknown subcommand {command!r}\n\n{USAGE}")
        return None

    def _simple(self, command: str) -> None:
        if command == "stop":
            session_commands.stop()
        elif command == "status":
            session_commands.status()
        elif command == "dashboard":
            session_commands.dashboard()
        else:
            self.holders.invalidate()
            print(history_gc.report(history_gc.collect_history(self.shell)))

    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """Run the cell as a task on a worker: ``%%remote [-o NAMES] [--block] …``."""
        from memlab.jupyter import remote_cell

        return remote_cell.run(self.shell, line, cell)
