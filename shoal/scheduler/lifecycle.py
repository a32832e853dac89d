"""Every state a task and an engine can be in, and the transitions allowed
between them (engines: idle, busy, blocked, stopping).

A task is in exactly one state; `TaskTable.to` (tasks.py) is the only place
that changes it, and `Membership.engine_to` (membership.py) an engine's.  Each
refuses a transition not listed here (a bug in the scheduler: logged loudly,
and raised where SHOAL_STRICT_STATES=1, as in the tests).
"""
from __future__ import annotations

import os
from typing import Literal

TaskState = Literal["waiting", "ready", "queued", "revoking", "running", "cancelling",
                    "finished", "failed", "cancelled"]
WAITING: TaskState = "waiting"        # for its arguments
READY: TaskState = "ready"            # in a ready queue (or an actor caller's queue)
QUEUED: TaskState = "queued"          # sent to a busy engine, behind its running task
REVOKING: TaskState = "revoking"      # queued, and asked back (RevokeTask sent)
RUNNING: TaskState = "running"        # it holds its resources on its engine
CANCELLING: TaskState = "cancelling"  # running, told to stop (InterruptTask sent)
FINISHED: TaskState = "finished"
FAILED: TaskState = "failed"
CANCELLED: TaskState = "cancelled"

ENDED = (FINISHED, FAILED, CANCELLED)
ON_ENGINE = frozenset((QUEUED, REVOKING, RUNNING, CANCELLING))   # sent to an engine
HOLDING = frozenset((RUNNING, CANCELLING))                       # holds an engine and resources

TASK_TRANSITIONS = frozenset({
    (None, WAITING),                                  # submitted
    (WAITING, READY), (WAITING, FAILED), (WAITING, CANCELLED),
    (READY, WAITING),                                 # an argument is being rebuilt
    (READY, RUNNING), (READY, QUEUED), (READY, FAILED), (READY, CANCELLED),
    (QUEUED, RUNNING),                                # promoted: its predecessor finished
    (QUEUED, REVOKING), (QUEUED, READY),              # its engine died before it started
    (QUEUED, FINISHED), (QUEUED, FAILED), (QUEUED, CANCELLED),   # ran before its promotion was seen
    (REVOKING, READY),                                # given back
    (REVOKING, QUEUED),                               # refused while still queued
    (REVOKING, RUNNING),                              # promoted while the revoke was on its way
    (REVOKING, FINISHED), (REVOKING, FAILED), (REVOKING, CANCELLED),
    (RUNNING, READY),                                 # retried, or a crossed revoke undone
    (RUNNING, CANCELLING),
    (RUNNING, FINISHED), (RUNNING, FAILED), (RUNNING, CANCELLED),
    (CANCELLING, FINISHED), (CANCELLING, FAILED), (CANCELLING, CANCELLED),
})

# old state -> the states it may go to (a lookup without building a pair per call)
NEXT_STATES = {old: frozenset(new for o, new in TASK_TRANSITIONS if o == old)
               for old in (None, *TaskState.__args__)}

EngineState = Literal["idle", "busy", "blocked", "stopping"]
IDLE: EngineState = "idle"
BUSY: EngineState = "busy"
BLOCKED: EngineState = "blocked"     # busy, its task waiting in get (its CPU lent back)
STOPPING: EngineState = "stopping"   # told to stop (its task was killed); not idle until replaced
ENGINE_TRANSITIONS = frozenset({(IDLE, BUSY), (BUSY, IDLE), (BUSY, BUSY), (IDLE, IDLE),
                                (BUSY, BLOCKED), (BLOCKED, BUSY), (BLOCKED, IDLE),
                                (IDLE, STOPPING), (BUSY, STOPPING), (BLOCKED, STOPPING)})


class IllegalTransition(AssertionError):
    """The scheduler moved a task or an engine along a transition that is not
    allowed: a bug in the scheduler, never the user's."""


def strict_default() -> bool:
    return os.environ.get("SHOAL_STRICT_STATES") == "1"
