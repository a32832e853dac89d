"""`.remote()` checks its arguments at the call; options are checked as Ray does."""
from __future__ import annotations

import re

import pytest

import shoal
from shoal.core.options import ACTOR_OPTIONS, TASK_OPTIONS


@shoal.remote
def add(a, b, *, scale=1):
    return (a + b) * scale


@shoal.remote
class Account:
    def __init__(self, owner, *, balance=0):
        self.owner = owner
        self.balance = balance

    def deposit(self, amount, note=None):
        self.balance += amount
        return self.balance

    @staticmethod
    def fee(amount):
        return amount * 0.01

    @classmethod
    def kind(cls, suffix):
        return cls.__name__ + suffix


@shoal.remote
class Bare:
    def ping(self):
        return "pong"


@pytest.mark.parametrize("args, kwargs, message", [
    ((1,), {}, "missing a required argument: 'b'"),
    ((1, 2, 3), {}, "too many positional arguments"),
    ((1, 2), {"scal": 2}, "got an unexpected keyword argument 'scal'"),
    ((1,), {"a": 2}, "multiple values for argument 'a'"),
])
def test_function_call_is_checked_at_remote(cluster, args, kwargs, message):
    with pytest.raises(TypeError, match=re.escape(f"add() {message}")):
        add.remote(*args, **kwargs)


def test_good_calls_still_run(cluster):
    assert shoal.get(add.remote(1, 2, scale=3)) == 9
    assert shoal.get(add.remote(b=2, a=1)) == 3
    acct = Account.remote("ann", balance=5)
    assert shoal.get(acct.deposit.remote(5, note="x")) == 10
    assert shoal.get(acct.fee.remote(100)) == 1.0
    assert shoal.get(acct.kind.remote("!")) == "Account!"


def test_actor_constructor_and_methods_are_checked(cluster):
    with pytest.raises(TypeError, match=re.escape("Account() missing a required argument")):
        Account.remote()
    with pytest.raises(TypeError, match="too many positional"):
        Account.remote("ann", 5)                    # balance is keyword-only
    with pytest.raises(TypeError, match=re.escape("Bare() too many positional arguments")):
        Bare.remote(1)
    acct = Account.remote("ann")
    with pytest.raises(TypeError, match=re.escape("Account.deposit() missing a required")):
        acct.deposit.remote()
    with pytest.raises(TypeError, match=re.escape("Account.fee() too many positional")):
        acct.fee.remote(1, 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        acct.kind.remote("!", x=1)
    with pytest.raises(TypeError, match="too many positional"):
        acct.deposit.options(num_returns=1).remote(1, 2, 3)


def test_a_handle_passed_to_a_task_checks_calls_there_too(cluster):
    @shoal.remote
    def misuse(acct):
        try:
            acct.deposit.remote()
        except TypeError as exc:
            return str(exc)

    assert "Account.deposit() missing a required argument" in \
        shoal.get(misuse.remote(Account.remote("bob")))


def _valid_list(message):
    return eval(message.split("Valid ones are ")[1].rstrip("."))


def test_unknown_options_list_the_public_valid_ones():
    with pytest.raises(ValueError, match="Invalid option keyword 'num_cpu' for remote functions"
                       ) as info:
        add.options(num_cpu=1)
    valid = _valid_list(str(info.value))
    assert "num_cpus" in valid and "max_retries" in valid
    assert not [k for k in valid if k.startswith("_")]
    with pytest.raises(ValueError, match="Invalid option keyword 'max_restart' for actors") as info:
        Account.options(max_restart=1)
    valid = _valid_list(str(info.value))
    assert "max_restarts" in valid and not [k for k in valid if k.startswith("_")]
    with pytest.raises(ValueError, match="Invalid option keyword"):
        shoal.remote(num_cpu=1)(lambda: 1)


@pytest.mark.parametrize("options", [
    {"num_cpus": "2"}, {"num_gpus": [1]}, {"resources": [("a", 1)]}, {"max_retries": 1.5},
    {"name": 3}, {"num_returns": 1.0}, {"retry_exceptions": ValueError},
    {"runtime_env": "env"}, {"scheduling_strategy": 3}, {"max_retries": True},
])
def test_option_type_errors_are_type_errors(options):
    with pytest.raises(TypeError, match="The type of keyword"):
        add.options(**options)


@pytest.mark.parametrize("options", [
    {"num_cpus": -1}, {"resources": {"CPU": 1}}, {"resources": {"x": -1}}, {"max_retries": -2},
    {"num_returns": -1}, {"num_returns": "many"}, {"retry_exceptions": [int]},
    {"scheduling_strategy": "PACK"}, {"max_calls": 1},
])
def test_option_bad_values_are_value_errors(options):
    with pytest.raises(ValueError):
        add.options(**options)


@pytest.mark.parametrize("options, error", [
    ({"max_concurrency": 0}, ValueError), ({"max_concurrency": "2"}, TypeError),
    ({"lifetime": "forever"}, ValueError), ({"lifetime": 1}, TypeError),
    ({"get_if_exists": True}, ValueError), ({"get_if_exists": "yes"}, TypeError),
    ({"max_task_retries": 2}, ValueError), ({"max_restarts": -2}, ValueError),
    ({"namespace": 1}, TypeError), ({"concurrency_groups": {"io": 2}}, ValueError),
])
def test_actor_option_errors(options, error):
    with pytest.raises(error):
        Account.options(**options)


def test_ray_options_shoal_ignores_are_accepted():
    add.options(accelerator_type="A100", enable_task_events=False, label_selector={"a": "b"})
    Account.options(max_restarts=1, max_task_retries=2, allow_out_of_order_execution=False)


def test_empty_parentheses_and_async_functions_are_refused():
    with pytest.raises(AssertionError, match="no arguments and no parentheses"):
        shoal.remote()
    with pytest.raises(TypeError, match="no arguments and no parentheses"):
        shoal.remote()(lambda: 1)
    with pytest.raises(TypeError, match="function or a class"):
        shoal.remote(num_cpus=1)(3)

    async def coro():
        return 1

    with pytest.raises(ValueError, match="'async def' should not be used for remote tasks"):
        shoal.remote(coro)
    with pytest.raises(ValueError, match="'async def'"):
        shoal.remote(num_cpus=1)(coro)


def test_method_decorator_options():
    with pytest.raises(TypeError, match="at least one of the arguments"):
        shoal.method()
    with pytest.raises(ValueError, match="Invalid option keyword 'num_return'"):
        shoal.method(num_return=2)
    with pytest.raises(ValueError, match="num_returns"):
        shoal.method(num_returns=-1)
    assert shoal.method(num_returns=2, concurrency_group="io")(lambda self: (1, 2))


def test_option_tables_cover_rays_keywords():
    ray_task = {"accelerator_type", "memory", "name", "num_cpus", "num_gpus",
                "object_store_memory", "placement_group", "placement_group_bundle_index",
                "placement_group_capture_child_tasks", "resources", "runtime_env",
                "scheduling_strategy", "_metadata", "max_calls", "max_retries", "num_returns",
                "retry_exceptions"}
    ray_actor = ray_task - {"max_calls", "max_retries", "num_returns", "retry_exceptions"} | {
        "concurrency_groups", "lifetime", "max_concurrency", "max_restarts", "max_task_retries",
        "max_pending_calls", "namespace", "get_if_exists"}
    assert ray_task <= set(TASK_OPTIONS) and ray_actor <= set(ACTOR_OPTIONS)
