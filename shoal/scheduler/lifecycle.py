"""Every state a task and an engine can be in, the transitions allowed between
them (engines: idle, busy, blocked, stopping), and each task's story (what happened
to it, when, and why).

A task is in exactly one state; `TaskLifecycle._to` is the only place that
changes it, and it refuses a transition not in TASK_TRANSITIONS (a bug in the
scheduler: logged loudly, and raised where SHOAL_STRICT_STATES=1, as in the
tests).  Each transition is also one record of the task's story, kept while
the task lives and for the last FINISHED_STORIES tasks that ended (like
distributed's `Scheduler.story`).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Literal, Optional

from ..protocol.object_ids import task_of

log = logging.getLogger("shoal.scheduler")

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

STORY_PER_TASK = 64          # records kept per task (the first and the latest ones)
FINISHED_STORIES = 10_000    # stories of ended tasks kept for `shoal story`


class IllegalTransition(AssertionError):
    """The scheduler moved a task or an engine along a transition that is not
    allowed: a bug in the scheduler, never the user's."""


def strict_default() -> bool:
    return os.environ.get("SHOAL_STRICT_STATES") == "1"


class TaskLifecycle:
    """The state changes of SchedulerState's tasks and engines, and the stories."""

    def _init_lifecycle(self, strict: Optional[bool]) -> None:
        self.strict = strict_default() if strict is None else strict
        self.stimulus: tuple = ("start", 0, self.clock())   # the event handled now: kind, id, time
        self._stimuli = 0
        # task id -> story, oldest first (bounded); an OrderedDict because a dict
        # deleted from the front makes next(iter()) skip dead slots (~5 µs a task)
        self.ended_stories: OrderedDict = OrderedDict()

    def _stimulate(self, kind: str) -> None:
        """A new event (a message, a closed connection, a timer) begins."""
        self._stimuli += 1
        self.stimulus = (kind, self._stimuli, self.clock())

    def _to(self, task, state: TaskState, why: str) -> None:
        """Move `task` to `state`, recording why in its story."""
        old = task.state
        if state not in NEXT_STATES[old]:
            self._illegal(f"task {task.spec.task_id} ({task.spec.name}): {old} -> {state} "
                          f"({why})")
        task.state = state
        story = task.story
        story.append((self.stimulus, old, state, why, task.engine_id))
        if len(story) > STORY_PER_TASK:        # keep how it began and how it goes now
            del story[1]
        if state in ENDED:
            # A tuple of tuples of atoms: the garbage collector stops tracking it.
            stories = self.ended_stories
            stories[task.spec.task_id] = tuple(story)
            if len(stories) > FINISHED_STORIES:
                stories.popitem(last=False)

    def _engine_to(self, engine, state: EngineState) -> None:
        self.members.engine_to(engine, state)     # (membership.py owns engines)

    def _illegal(self, what: str) -> None:
        log.error("BUG: illegal transition %s, while handling %s-%d", what, *self.stimulus[:2])
        if self.strict:
            raise IllegalTransition(what)

    def story(self, task_id: str) -> Optional[list]:
        """The story of a live or recently ended task, as records, or None."""
        task = self.tasks.get(task_id)
        story = task.story if task is not None else self.ended_stories.get(task_id)
        if story is None:
            return None
        return [{"time": t, "stimulus": f"{kind}-{n}", "from": old, "to": new, "why": why,
                 "engine_id": engine} for (kind, n, t), old, new, why, engine in story]

    def _query_story(self, args: dict) -> dict:
        """Query "story": args task_id, or object_id (the task that makes it);
        either may be given the other's kind of id."""
        ident = args.get("task_id") or args["object_id"]
        task_id, story = ident, self.story(ident)
        if story is None:
            obj = self.objects.get(ident)
            task_id = (obj.producer if obj is not None and obj.producer
                       else task_of(ident))
            story = self.story(task_id)
        if story is None:
            raise LookupError(f"no story for task {ident}: it is not a task of this cluster, "
                              f"or it ended more than {FINISHED_STORIES:,} tasks ago")
        return {"task_id": task_id, "story": story}
