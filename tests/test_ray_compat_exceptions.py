"""Ray's exceptions under shoal: every name of ray.exceptions with Ray's
hierarchy, and a user's exception coming back from a task as itself."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import threading
import traceback

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal import exceptions as ex
from shoal.exceptions import TaskError

# ray.exceptions (Ray 2.x docs and source) -> the Ray base classes each derives from.
RAY_EXCEPTIONS = {
    "RayError": (Exception,), "CrossLanguageError": ("RayError",),
    "TaskCancelledError": ("RayError",), "RayTaskError": ("RayError",),
    "LocalRayletDiedError": ("RayError",), "WorkerCrashedError": ("RayError",),
    "RayActorError": ("RayError",), "ActorDiedError": ("RayActorError",),
    "ActorUnavailableError": ("RayActorError",), "ActorAlreadyExistsError": (ValueError, "RayError"),
    "RaySystemError": ("RayError",), "ObjectStoreFullError": ("RayError",),
    "OutOfDiskError": ("RayError",), "OutOfMemoryError": ("RayError",),
    "NodeDiedError": ("RayError",), "ObjectLostError": ("RayError",),
    "ObjectFetchTimedOutError": ("ObjectLostError",),
    "ReferenceCountingAssertionError": ("ObjectLostError", AssertionError),
    "OwnerDiedError": ("ObjectLostError",), "ObjectReconstructionFailedError": ("ObjectLostError",),
    "ObjectReconstructionFailedMaxAttemptsExceededError": ("ObjectLostError",),
    "ObjectReconstructionFailedLineageEvictedError": ("ObjectLostError",),
    "GetTimeoutError": ("RayError", TimeoutError), "PlasmaObjectNotAvailable": ("RayError",),
    "AsyncioActorExit": ("RayError",), "RuntimeEnvSetupError": ("RayError",),
    "TaskPlacementGroupRemoved": ("RayError",), "ActorPlacementGroupRemoved": ("RayError",),
    "PendingCallsLimitExceeded": ("RayError",), "TaskUnschedulableError": ("RayError",),
    "ActorUnschedulableError": ("RayError",), "RayChannelError": ("RaySystemError",),
    "RayChannelTimeoutError": ("RayChannelError", TimeoutError),
    "RayCgraphCapacityExceeded": ("RaySystemError",), "UnserializableException": ("RayError",),
    "ObjectRefStreamEndOfStreamError": ("RayError",), "AuthenticationError": ("RayError",),
    "OufOfBandObjectRefSerializationException": ("RayError",),
}


@pytest.mark.parametrize("name", sorted(RAY_EXCEPTIONS))
def test_every_ray_exception_exists_with_rays_bases(name):
    cls = getattr(ex, name)
    assert isinstance(cls, type) and issubclass(cls, BaseException)
    for base in RAY_EXCEPTIONS[name]:
        assert issubclass(cls, getattr(ex, base) if isinstance(base, str) else base), (name, base)
    assert name in ex.__all__


def test_raising_a_ray_exception_by_hand():
    assert "not schedulable: node gone" in str(ex.TaskUnschedulableError("node gone"))
    assert str(ex.RaySystemError("boom")) == "System error: boom"
    assert str(ex.ClusterLostError("lost it")) == "lost it"
    assert isinstance(ex.ClusterLostError("x"), ConnectionError)


# -------------------------------------------------------------- round trips
# Engines cannot import this test module: its classes travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

class TwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


class KeywordOnly(Exception):
    def __init__(self, *, code):
        super().__init__(f"code {code}")
        self.code = code


class Formatted(ValueError):
    def __init__(self, n):
        super().__init__(f"bad value {n}")
        self.n = n


class WithLock(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()       # cannot be pickled
        self.kept = 7


def _raise(make):
    raise make()


@shoal.remote(max_retries=0)
def fail_with(make):
    _raise(make)


def roundtrip(make):
    with pytest.raises(TaskError) as info:
        shoal.get(fail_with.remote(make))
    try:
        _raise(make)
    except BaseException as local:
        return info.value, local


def _same(remote: TaskError, local: BaseException, skip=()):
    cls = type(local)
    assert isinstance(remote, cls) and isinstance(remote, TaskError)
    assert type(remote.cause) is cls
    assert remote.cause.args == local.args
    assert remote.args == local.args
    assert str(remote.cause) == str(local)
    state = {k: v for k, v in vars(local).items() if k not in skip}
    assert {k: v for k, v in vars(remote.cause).items() if k not in skip} == state
    for k, v in state.items():
        if k not in vars(TaskError("f", [], "")):
            assert getattr(remote, k) == v
    last_line = traceback.format_exception_only(local)[-1].strip()
    assert last_line in str(remote) and "in _raise" in str(remote)     # message and traceback


@pytest.mark.parametrize("make", [
    lambda: TwoArgs("x", 2),
    lambda: KeywordOnly(code=3),
    lambda: Formatted(5),
    lambda: json.loads("{bad"),
    lambda: subprocess.run(["false"], check=True),
    lambda: subprocess.CalledProcessError(2, ["cmd", "a"], output=b"out", stderr=b"err"),
    lambda: b"\xff".decode(),
    lambda: open("/nonexistent-dir/shoal-test"),
    lambda: OSError(errno.EACCES, "denied", "/x"),
    lambda: KeyError("k"),
    lambda: StopIteration(4),
    lambda: SyntaxError("bad", ("f.py", 3, 4, "x y")),
], ids=["two-args", "keyword-only", "formatted", "json", "called-process",
        "called-process-output", "unicode-decode", "file-not-found", "oserror-errno", "key",
        "stop-iteration", "syntax"])
def test_user_exception_comes_back_as_itself(cluster, make):
    remote, local = roundtrip(make)
    _same(remote, local)
    if isinstance(local, OSError):
        assert (remote.errno, remote.strerror, remote.filename) == \
            (local.errno, local.strerror, local.filename)
    if isinstance(local, UnicodeDecodeError):
        assert (remote.start, remote.end, remote.reason, remote.object) == \
            (local.start, local.end, local.reason, local.object)
    if isinstance(local, SyntaxError):
        assert (remote.lineno, remote.filename) == (3, "f.py")


def test_unpicklable_attribute_keeps_class_message_and_traceback(cluster):
    remote, local = roundtrip(lambda: WithLock("no pickle"))
    _same(remote, local, skip=("lock",))
    assert not hasattr(remote.cause, "lock") and remote.kept == 7


def test_unpicklable_class_keeps_name_message_and_traceback(cluster):
    @shoal.remote(max_retries=0)
    def fail():
        class Local(Exception):
            lock = __import__("threading").Lock()   # the class cannot be pickled
        raise Local("inner message")

    with pytest.raises(TaskError) as info:
        shoal.get(fail.remote())
    assert isinstance(info.value.cause, ex.UnserializableException)
    assert "Local: inner message" in str(info.value.cause)
    assert "inner message" in str(info.value) and "in fail" in str(info.value)


def test_error_passes_through_a_dependent_task(cluster):
    @shoal.remote(max_retries=0)
    def use(x):
        return x

    with pytest.raises(TwoArgs) as info:
        shoal.get(use.remote(fail_with.remote(lambda: TwoArgs("x", 2))))
    assert info.value.b == 2


# ----------------------------------------------- generated exception classes
BASES = [Exception, ValueError, RuntimeError, KeyError, LookupError, ArithmeticError, OSError]


@st.composite
def exception_classes(draw):
    """(class, args, kwargs): an exception class with a generated constructor."""
    n_pos = draw(st.integers(0, 3))
    kw = draw(st.lists(st.booleans(), max_size=2))         # True: required keyword-only
    pos = [f"p{i}" for i in range(n_pos)]
    kws = [f"k{i}" for i in range(len(kw))]
    params = pos + (["*"] + [k if req else f"{k}=None" for k, req in zip(kws, kw)] if kws else [])
    names = pos + kws
    message = draw(st.sampled_from(["none", "const", "first", "format", "all"]))
    call = {"none": "", "const": "super().__init__('constant')",
            "first": f"super().__init__({names[0]})" if names else "super().__init__()",
            "format": "super().__init__(" + repr("got ") + " + repr((" +
                      "".join(f"{n}," for n in names) + ")))",
            "all": f"super().__init__({', '.join(names)})"}[message]
    stored = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    body = [call] + [f"self.{n} = {n}" for n in stored]
    if draw(st.booleans()):
        body.append("self.extra = [1, 'two']")
    base = draw(st.sampled_from(BASES))
    source = (f"class Generated(base):\n    def __init__(self{''.join(', ' + p for p in params)}):\n"
              + "".join(f"        {line}\n" for line in body if line) + "        pass\n")
    namespace = {"base": base, "__name__": "generated_exceptions"}
    exec(source, namespace)
    values = st.one_of(st.integers(), st.text(max_size=8), st.none(),
                       st.lists(st.integers(), max_size=3))
    args = tuple(draw(values) for _ in pos)
    kwargs = {k: draw(values) for k, req in zip(kws, kw) if req or draw(st.booleans())}
    return namespace["Generated"], args, kwargs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exception_classes())
def test_generated_exceptions_round_trip(cluster, generated):
    cls, args, kwargs = generated
    remote, local = roundtrip(lambda: cls(*args, **kwargs))
    _same(remote, local)
