"""Every option of remote functions and actor classes: its default and its check.

``@memlab.remote(...)`` on a function takes the task options, on a class the actor options;
``.options(...)`` takes the same per call. An option of the other kind gets a ``TypeError`` that
says where it belongs; a bad value gets a ``ValueError`` naming the option.
"""

from __future__ import annotations

from typing import Any

TASK_OPTIONS: dict[str, Any] = {
    "num_returns": 1,
    "max_retries": 3,
    "retry_exceptions": False,
    "name": None,
}

ACTOR_OPTIONS: dict[str, Any] = {
    "name": None,
    "max_restarts": 0,
    "max_task_retries": 0,
    "max_concurrency": 1,
}

ACTOR_ONLY = frozenset(ACTOR_OPTIONS) - frozenset(TASK_OPTIONS)
TASK_ONLY = frozenset(TASK_OPTIONS) - frozenset(ACTOR_OPTIONS)


def validate_task_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if every key is a task option with a valid value."""
    unknown = set(options) - set(TASK_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown remote option(s) {sorted(unknown)}; valid options are {sorted(TASK_OPTIONS)}"
        )
    check_count(options, "num_returns", 1)
    check_count(options, "max_retries", 3, unlimited=True)
    return options


def validate_actor_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if every key is an actor option with a valid value."""
    unknown = set(options) - set(ACTOR_OPTIONS)
    if unknown:
        raise TypeError(
            f"unknown actor option(s) {sorted(unknown)}; valid options are {sorted(ACTOR_OPTIONS)}"
        )
    check_count(options, "max_restarts", 0, unlimited=True)
    check_count(options, "max_task_retries", 0, unlimited=True)
    check_count(options, "max_concurrency", 1)
    name = options.get("name")
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"an actor name must be a non-empty str, got {name!r}")
    return options


def check_decorator_options(target: object, options: dict[str, Any]) -> None:
    """Refuse options of the other kind: actor options on a function, task ones on a class."""
    if isinstance(target, type):
        wrong = sorted(TASK_ONLY & set(options))
        if wrong:
            raise TypeError(
                f"{wrong} are options of remote functions, not of actor classes "
                f"like {target.__name__}; actors take {sorted(ACTOR_ONLY)} and name"
            )
        return
    wrong = sorted(ACTOR_ONLY & set(options))
    if wrong:
        raise TypeError(
            f"{wrong} are actor options: they apply to classes, but "
            f"{getattr(target, '__name__', target)!r} is a "
            f"{type(target).__name__}; put @memlab.remote(...) on a class"
        )


def check_count(options: dict[str, Any], key: str, default: int, unlimited: bool = False) -> None:
    """``options[key]`` must be a positive int, or with ``unlimited`` an int >= 0 or -1."""
    value = options.get(key, default)
    ok = isinstance(value, int) and not isinstance(value, bool)
    if unlimited and not (ok and value >= -1):
        raise ValueError(f"{key} must be an int >= 0, or -1 for unlimited; got {value!r}")
    if not unlimited and not (ok and value >= 1):
        raise ValueError(f"{key} must be a positive int, got {value!r}")
