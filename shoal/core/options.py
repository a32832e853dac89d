"""Ray's options for tasks and actors: which keywords exist, their types and values.

Checked where the user writes them (`@remote(...)`, `.options(...)`), with
Ray's errors: an unknown keyword is a ValueError listing the valid public
ones, a wrong type a TypeError, a bad value a ValueError.  Which options shoal
honours and which it accepts and ignores on purpose is in
docs/ray-compatibility.md (IGNORED_* below are those).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

from . import runtime_env
from .scheduling_strategies import (
    NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy,
)

GENERATOR_RETURNS = ("streaming", "dynamic")


class Option:
    """One keyword: the types it takes and a check of its value (returning an
    error message, or None when the value is fine)."""

    def __init__(self, types: tuple, check: Optional[Callable[[Any], Optional[str]]] = None) -> None:
        self.types = types
        self.check = check

    def validate(self, keyword: str, value: Any) -> None:
        if not isinstance(value, self.types) or (
                isinstance(value, bool) and bool not in self.types and object not in self.types):
            names = ", ".join("None" if t is type(None) else t.__name__ for t in self.types)
            raise TypeError(f"The type of keyword '{keyword}' must be one of ({names}), but "
                            f"received type {type(value).__name__}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ValueError(problem)


def _count(name: str, infinite: bool) -> Option:
    """A whole number; -1 means infinity where `infinite`."""
    low = -1 if infinite else 0
    what = "None, 0, -1 or a positive integer, where -1 represents infinity" if infinite \
        else "None, 0 or a positive integer"
    return Option((int, type(None)), lambda x: None if x is None or x >= low
                  else f"The keyword '{name}' only accepts {what}, got {x!r}.")


def _quantity(name: str, value) -> Optional[str]:
    if value < 0:
        return f"The quantity of resource {name} cannot be negative, got {value!r}"
    return None


def _resource(name: str) -> Option:
    return Option((float, int, type(None)), lambda x: None if x is None else _quantity(name, x))


def _check_resources(resources) -> Optional[str]:
    if resources is None:
        return None
    if "CPU" in resources or "GPU" in resources:
        return ("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' in "
                "'resources' keyword")
    for name, amount in resources.items():
        if not isinstance(name, str):
            return f"Resource names must be strings, got {name!r}"
        if not isinstance(amount, numbers.Real) or isinstance(amount, bool):
            return f"The quantity of resource {name} must be a number, got {amount!r}"
        problem = _quantity(name, amount)
        if problem:
            return problem
    return None


def _check_strategy(value) -> Optional[str]:
    if isinstance(value, str) and value not in ("DEFAULT", "SPREAD"):
        return (f"Invalid scheduling_strategy {value!r}: use 'DEFAULT', 'SPREAD', a "
                f"NodeAffinitySchedulingStrategy or a PlacementGroupSchedulingStrategy")
    return None


def _check_num_returns(value) -> Optional[str]:
    if value is None or value in GENERATOR_RETURNS or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return ("The keyword 'num_returns' only accepts None, a non-negative integer, "
            f"'streaming' (for generators) or 'dynamic', got {value!r}")


def _check_retry_exceptions(value) -> Optional[str]:
    if isinstance(value, bool) or all(isinstance(c, type) and issubclass(c, BaseException)
                                      for c in value):
        return None
    return "retry_exceptions must be either a boolean or a list of exceptions"


def _check_lifetime(value) -> Optional[str]:
    if value in (None, "detached", "non_detached"):
        return None
    return ("actor `lifetime` argument must be one of 'detached', 'non_detached' and 'None', "
            f"got {value!r}")


def _check_name(value) -> Optional[str]:
    return "'name' must not be empty" if value == "" else None


def _check_concurrency_groups(value) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "concurrency_groups must be a dict of group name -> max concurrency"
    for name, size in value.items():
        if not isinstance(name, str) or not isinstance(size, int) or isinstance(size, bool) \
                or size < 1:
            return (f"concurrency_groups maps names to positive integers, got "
                    f"{name!r}: {size!r}")
    return None


def _check_runtime_env(value) -> Optional[str]:
    runtime_env.validate(value)       # raises TypeError / ValueError naming the field
    return None


def _check_concurrency(value) -> Optional[str]:
    if value is None or value >= 1:
        return None
    return f"max_concurrency must be a positive integer, got {value!r}"


COMMON_OPTIONS: dict[str, Option] = {
    "accelerator_type": Option((str, type(None))),
    "memory": _resource("memory"),
    "name": Option((str, type(None)), _check_name),
    "num_cpus": _resource("num_cpus"),
    "num_gpus": _resource("num_gpus"),
    "object_store_memory": _count("object_store_memory", False),
    "placement_group": Option((object,)),
    "placement_group_bundle_index": Option((int,)),
    "placement_group_capture_child_tasks": Option((bool, type(None))),
    "resources": Option((dict, type(None)), _check_resources),
    "runtime_env": Option((dict, type(None)), _check_runtime_env),
    "scheduling_strategy": Option((type(None), str, PlacementGroupSchedulingStrategy,
                                   NodeAffinitySchedulingStrategy), _check_strategy),
    "label_selector": Option((dict, type(None))),
    "enable_task_events": Option((bool,)),
    "_metadata": Option((dict, type(None))),
}

TASK_OPTIONS: dict[str, Option] = {
    **COMMON_OPTIONS,
    "max_calls": _count("max_calls", False),
    "max_retries": _count("max_retries", True),
    "num_returns": Option((int, str, type(None)), _check_num_returns),
    "object_store_memory": Option((int, type(None)), lambda x: None if x is None else
                                  "Setting 'object_store_memory' is not implemented for tasks"),
    "retry_exceptions": Option((bool, list, tuple), _check_retry_exceptions),
    "_generator_backpressure_num_objects": Option((int, type(None))),
    "_engine_id": Option((str, type(None))),    # shoal only: run on this engine (tests, magics)
}

ACTOR_OPTIONS: dict[str, Option] = {
    **COMMON_OPTIONS,
    "concurrency_groups": Option((list, dict, type(None)), _check_concurrency_groups),
    "lifetime": Option((str, type(None)), _check_lifetime),
    "max_concurrency": Option((int, type(None)), _check_concurrency),
    "max_restarts": _count("max_restarts", True),
    "max_task_retries": _count("max_task_retries", True),
    "max_pending_calls": _count("max_pending_calls", True),
    "namespace": Option((str, type(None))),
    "get_if_exists": Option((bool,)),
    "allow_out_of_order_execution": Option((bool,)),
}

METHOD_OPTIONS: dict[str, Option] = {
    "num_returns": TASK_OPTIONS["num_returns"],
    "name": Option((str, type(None))),
    "concurrency_group": Option((str, type(None))),
    "max_task_retries": _count("max_task_retries", True),
    "retry_exceptions": TASK_OPTIONS["retry_exceptions"],
    "enable_task_events": Option((bool,)),
    "_generator_backpressure_num_objects": Option((int, type(None))),
    "_metadata": Option((dict, type(None))),
}

# Accepted because Ray code passes them, deliberately without effect in shoal
# (docs/ray-compatibility.md says why).
IGNORED_OPTIONS = frozenset({"accelerator_type", "label_selector", "enable_task_events",
                             "_metadata", "_generator_backpressure_num_objects",
                             "allow_out_of_order_execution", "object_store_memory"})


def _public(table: dict) -> list:
    return [k for k in table if not k.startswith("_")]


def _validate(options: dict, table: dict, what: str) -> None:
    for key, value in options.items():
        option = table.get(key)
        if option is None:
            raise ValueError(f"Invalid option keyword {key!r} for {what}. "
                             f"Valid ones are {_public(table)}.")
        option.validate(key, value)
    if options.get("placement_group") not in (None, "default") and \
            options.get("scheduling_strategy") is not None:
        raise ValueError("Placement groups should be specified via the scheduling_strategy "
                         "option. The placement_group option is deprecated.")


def validate_task_options(options: dict, in_options: bool = False) -> dict:
    """Ray's checks for `@remote(...)` / `.options(...)` of a remote function."""
    _validate(options, TASK_OPTIONS, "remote functions")
    if in_options and "max_calls" in options:
        raise ValueError("Setting 'max_calls' is not supported in '.options()'.")
    return options


def validate_actor_options(options: dict, in_options: bool = False) -> dict:
    """Ray's checks for `@remote(...)` / `.options(...)` of an actor class."""
    _validate(options, ACTOR_OPTIONS, "actors")
    if in_options and "concurrency_groups" in options:
        raise ValueError("Setting 'concurrency_groups' is not supported in '.options()'.")
    if (options.get("max_restarts") or 0) == 0 and (options.get("max_task_retries") or 0) != 0:
        raise ValueError("'max_task_retries' cannot be set if 'max_restarts' is 0 or if "
                         "'max_restarts' is not set.")
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError("The actor name must be specified to use `get_if_exists`.")
    return options


def validate_method_options(options: dict) -> dict:
    """Ray's checks for `@method(...)` / `handle.method.options(...)`."""
    _validate(options, METHOD_OPTIONS, "actor methods")
    return options
