"""The scheduler's tasks: each task's state, the queues of ready ones, what
waits for which object, the runs the views are told of, and each task's story.

One TaskTable per scheduler owns these; `to` is the only place a task's state
changes.  It refuses a transition not in lifecycle.TASK_TRANSITIONS (a bug in
the scheduler: logged loudly, and raised where SHOAL_STRICT_STATES=1, as in
the tests), and appends one record to the task's story: the stimulus (the
event being handled: kind, id, time), the old and new state, why, and the
engine.  Stories are kept while a task lives and for the last
FINISHED_STORIES tasks that ended (like distributed's `Scheduler.story`).
"""
from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from ..protocol import messages as m
from . import policy
from .lifecycle import ENDED, NEXT_STATES, READY, WAITING, IllegalTransition, TaskState

log = logging.getLogger("shoal.scheduler")
HISTORY = 20_000             # ended runs remembered for the timeline and status
STORY_PER_TASK = 64          # records kept per task (the first and the latest ones)
FINISHED_STORIES = 10_000    # stories of ended tasks kept for `shoal story`


@dataclass(eq=False, slots=True)
class Task:
    spec: m.SubmitTask
    owner: Any
    missing: set
    retries_left: int
    state: Optional[str] = None          # lifecycle.TaskState; None until submitted
    engine_id: Optional[str] = None
    host_id: Optional[str] = None
    held: dict = field(default_factory=dict)
    lent_cpu: float = 0.0                # CPU lent back while blocked in get
    gpu_ids: list = field(default_factory=list)
    children: set = field(default_factory=set)
    rebuilding: bool = False             # what it runs for: results lost with a host
    direct: bool = False                 # its engine may send its results straight to the owner
    straight: bool = False               # an actor call its caller sent the engine itself, running
    leased: bool = False                 # a task its owner sent the engine it leases (leases.py)
    blocks: bool = False                 # it has waited in get: queue nothing behind it
    pool: Optional[dict] = None          # its placement group bundle's resources, if any
    submitted_at: float = 0.0
    started_at: float = 0.0
    ended_at: float = 0.0                # its run's end as its engine reported it (0: now)
    warned_infeasible: bool = False
    # Where its output goes when a task started it: (owner, task id) of the
    # first task of the chain, so a cell's nested work prints under the cell.
    origin: Optional[tuple] = None
    # The early child (itself or an ancestor: a task whose parent, a straight
    # call, was not known yet) that makes `origin` provisional: output is held.
    provisional: Optional[str] = None
    story: list = field(default_factory=list)   # ((event, id, time), from, to, why, engine)


class TaskTable:
    """Live tasks, their queues and dependencies, ended runs and stories."""

    def __init__(self, out, clock: Callable[[], float], strict: bool) -> None:
        self.out = out                   # the scheduler's Outbox (run events)
        self.clock = clock
        self.strict = strict
        self.live: dict[str, Task] = {}
        self.tasks_of: dict = {}                 # owner -> its live tasks (not actors')
        self.ready: dict[tuple, deque] = {}      # resource shape -> ready task ids
        self.pinned: dict[str, deque] = {}       # engine id -> ready tasks for it alone
        self.dependents: dict[str, list] = {}    # pending object id -> waiting task ids
        self.history: deque = deque(maxlen=HISTORY)    # TaskEvents of ended runs
        self.finished_count = {"finished": 0, "failed": 0, "cancelled": 0}
        # task id -> story, oldest first (bounded); an OrderedDict because a dict
        # deleted from the front makes next(iter()) skip dead slots (~5 µs a task)
        self.ended_stories: OrderedDict = OrderedDict()
        self.stimulus: tuple = ("start", 0, clock())   # the event handled now: kind, id, time
        self._stimuli = 0

    # ------------------------------------------------------------------ events
    def stimulate(self, kind: str, now: Optional[float] = None) -> None:
        """A new event (a message, a closed connection, a timer) begins."""
        self._stimuli += 1
        self.stimulus = (kind, self._stimuli, self.clock() if now is None else now)

    # ------------------------------------------------------------------ states
    def new(self, spec: m.SubmitTask, owner, again: str = "") -> Task:
        """A task, waiting; `again` says why it runs again (an actor's restart,
        a lineage rebuild): its story goes on where it ended."""
        task = Task(spec, owner, set(), spec.max_retries, submitted_at=self.clock())
        self.live[spec.task_id] = task
        if spec.actor_id is None:
            self.tasks_of[owner] = self.tasks_of.get(owner, 0) + 1
        if again:
            task.story = list(self.ended_stories.pop(spec.task_id, ()))
        self.to(task, WAITING, again or "submitted")
        return task

    def to(self, task: Task, state: TaskState, why: str) -> None:
        """Move `task` to `state`, recording why in its story."""
        old = task.state
        if state not in NEXT_STATES[old]:
            self.illegal(f"task {task.spec.task_id} ({task.spec.name}): {old} -> {state} "
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

    def illegal(self, what: str) -> None:
        log.error("BUG: illegal transition %s, while handling %s-%d", what, *self.stimulus[:2])
        if self.strict:
            raise IllegalTransition(what)

    def end(self, task: Task, status: TaskState, why: str) -> None:
        """The task ended (finished, failed or cancelled): it leaves the table."""
        self.to(task, status, why)
        self.record(task, status)
        self.finished_count[status] = self.finished_count.get(status, 0) + 1
        spec = task.spec
        del self.live[spec.task_id]
        if spec.actor_id is None:
            left = self.tasks_of.pop(task.owner) - 1
            if left:
                self.tasks_of[task.owner] = left
        parent = self.live.get(spec.parent_task_id) if spec.parent_task_id else None
        if parent is not None:
            parent.children.discard(spec.task_id)

    def counts(self) -> dict:
        """Live tasks by state, then ended ones by how they ended."""
        states: dict = {}
        for task in self.live.values():
            states[task.state] = states.get(task.state, 0) + 1
        return {**states, **self.finished_count}

    # ------------------------------------------------------------------ queues
    def wait_for(self, task: Task, object_id: str) -> None:
        """The task needs `object_id`, which is pending."""
        task.missing.add(object_id)
        waiting = self.dependents.get(object_id)
        if waiting is None:
            self.dependents[object_id] = [task.spec.task_id]
        else:
            waiting.append(task.spec.task_id)

    def waiting_on(self, object_id: str) -> list:
        """The tasks that waited for `object_id` (now ready): no longer listed."""
        live = self.live
        return [live[t] for t in self.dependents.pop(object_id, ()) if t in live]

    def enqueue(self, task: Task, front: bool = False) -> None:
        """Queue a ready pool task by its resource shape (a placement makes a
        queue of its own: never pipelined, never in the way of others)."""
        shape = policy.shape_of(task.spec.resources)
        if task.spec.placement:
            shape += (("@placement", tuple(sorted(task.spec.placement.items()))),)
        queue = self.ready.get(shape)
        if queue is None:
            queue = self.ready[shape] = deque()
        queue.appendleft(task.spec.task_id) if front else queue.append(task.spec.task_id)

    def pin(self, task: Task) -> None:
        """Queue a ready task that must run on one engine (spec.engine_id)."""
        self.pinned.setdefault(task.spec.engine_id, deque()).append(task.spec.task_id)

    def all_ready(self) -> Iterator[Task]:
        """Every task still ready in the shape queues."""
        for queue in self.ready.values():
            for tid in queue:
                task = self.live.get(tid)
                if task is not None and task.state == READY:
                    yield task

    # ------------------------------------------------------------------ runs, for the views
    def record(self, task: Task, status: str) -> None:
        """A run ended (or a task ended without one): kept for snapshots, sent live."""
        ended, task.ended_at = task.ended_at, 0.0
        if not ended or ended < task.started_at:     # none, or an earlier run's (unrecorded)
            ended = self.clock()
        event = m.TaskEvent(task.spec.task_id, task.spec.name, status, task.engine_id,
                            task.host_id, task.started_at or None, ended)
        self.history.append(event)
        self.out.event(event)

    def running(self, task: Task) -> None:
        if self.out.subscribers:
            self.out.event(m.TaskEvent(task.spec.task_id, task.spec.name, "running",
                                       task.engine_id, task.host_id, task.started_at, None))

    def revoked(self, task: Task) -> None:
        """The run announced by `running` never began (a promotion undone):
        views drop it; it is not a run, so it is not kept in the history."""
        if self.out.subscribers:
            self.out.event(m.TaskEvent(task.spec.task_id, task.spec.name, "revoked",
                                       task.engine_id, task.host_id, task.started_at,
                                       self.clock()))

    # ------------------------------------------------------------------ stories
    def story(self, task_id: str) -> Optional[list]:
        """The story of a live or recently ended task, as records, or None."""
        task = self.live.get(task_id)
        story = task.story if task is not None else self.ended_stories.get(task_id)
        if story is None:
            return None
        return [{"time": t, "stimulus": f"{kind}-{n}", "from": old, "to": new, "why": why,
                 "engine_id": engine} for (kind, n, t), old, new, why, engine in story]
