"""The scheduler's actors: each actor's state, its name, the ones waiting for
a host, and each actor's story.

An actor is pending (waiting for a host), starting (its engine asked for),
creating (its constructor runs), alive, restarting (its engine died; it waits
for a host again), or dead.  `ActorTable.to` is the only place an actor's
state changes: a transition not in ACTOR_TRANSITIONS is a scheduler bug,
reported like a task's (`TaskTable.illegal`: logged, raised when strict), and
each transition is a record of the actor's story, shaped like a task's.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional

from ..protocol import messages as m

ActorState = Literal["pending", "starting", "creating", "alive", "restarting", "dead"]
PENDING: ActorState = "pending"
STARTING: ActorState = "starting"
CREATING: ActorState = "creating"
ALIVE: ActorState = "alive"
RESTARTING: ActorState = "restarting"
DEAD: ActorState = "dead"
WAITING_FOR_HOST = (PENDING, RESTARTING)

ACTOR_TRANSITIONS = frozenset({
    (None, PENDING),                                   # submitted
    (PENDING, STARTING), (RESTARTING, STARTING),       # placed: its engine is asked for
    (STARTING, CREATING),                              # its engine joined
    (STARTING, PENDING), (STARTING, RESTARTING),       # its host was lost first
    (CREATING, ALIVE),
    (CREATING, RESTARTING), (ALIVE, RESTARTING),       # its engine died
    *((s, DEAD) for s in (PENDING, STARTING, CREATING, ALIVE, RESTARTING)),
})
STORY_PER_ACTOR = 64


@dataclass(eq=False, slots=True)
class Actor:
    actor_id: str
    creation: m.SubmitTask
    owner: Any
    options: dict                    # ActorOptions from the client (see core/actor.py)
    state: Optional[str] = None      # ActorState; None until added to the table
    host_id: Optional[str] = None
    engine_id: Optional[str] = None
    held: dict = field(default_factory=dict)
    gpu_ids: list = field(default_factory=list)
    pool: Optional[dict] = None                     # its placement group bundle's, if any
    restarts: int = 0
    queues: dict = field(default_factory=dict)      # caller conn -> deque of call task ids
    inflight: dict = field(default_factory=dict)    # task id -> Task, sent to the engine
    straight: dict = field(default_factory=dict)    # caller conn -> its calls in inflight that
                                                    # it sent the engine itself (Task.straight)
    death_cause: str = ""
    death_error: Optional[bytes] = None             # the constructor's exception, serialized
    out_of_scope: bool = False
    warned_infeasible: bool = False
    story: list = field(default_factory=list)       # as a task's: (stimulus, from, to, why, engine)

    @property
    def name_key(self):
        name = self.options.get("name")
        return (self.options.get("namespace") or "default", name) if name else None


class ActorTable:
    """Every actor of the cluster, by id and by name, and those waiting for a host."""

    def __init__(self, stimulus: Callable[[], tuple], illegal: Callable[[str], None]) -> None:
        self._stimulus = stimulus        # the event being handled (the task table's)
        self._illegal = illegal
        self.actors: dict[str, Actor] = {}
        self.named: dict[tuple, str] = {}            # (namespace, name) -> actor id
        self.pending: deque = deque()                # actor ids waiting for a host

    def add(self, actor: Actor) -> Optional[str]:
        """A new actor, pending; returns why it cannot live (its name is
        taken by a live actor), or None (it is then known by its name)."""
        self.actors[actor.actor_id] = actor
        self.to(actor, PENDING, "submitted")
        key = actor.name_key
        if key is None:
            return None
        holder = self.actors.get(self.named.get(key, ""))
        if holder is not None and holder.state != DEAD:
            return f"the name {key[1]!r} (namespace {key[0]!r}) is already taken"
        self.named[key] = actor.actor_id
        return None

    def to(self, actor: Actor, state: ActorState, why: str) -> None:
        old = actor.state
        if (old, state) not in ACTOR_TRANSITIONS:
            self._illegal(f"actor {actor.actor_id}: {old} -> {state} ({why})")
        actor.state = state
        story = actor.story
        story.append((self._stimulus(), old, state, why, actor.engine_id))
        if len(story) > STORY_PER_ACTOR:
            del story[1]
        if state == DEAD:
            key = actor.name_key
            if key is not None and self.named.get(key) == actor.actor_id:
                del self.named[key]

    def wait_for_host(self, actor: Actor) -> None:
        self.pending.append(actor.actor_id)

    def by_name(self, namespace: str, name: str) -> Optional[Actor]:
        """The live actor of that name, or None."""
        actor = self.actors.get(self.named.get((namespace, name), ""))
        return actor if actor is not None and actor.state != DEAD else None

    def starting_on(self, host_id: str) -> list:
        """Actors placed on a host whose engine has not joined yet."""
        return [a for a in self.actors.values()
                if a.state == STARTING and a.host_id == host_id and a.engine_id is None]

    def story(self, actor_id: str) -> Optional[list]:
        actor = self.actors.get(actor_id)
        if actor is None:
            return None
        return [{"time": t, "stimulus": f"{kind}-{n}", "from": old, "to": new, "why": why,
                 "engine_id": engine} for (kind, n, t), old, new, why, engine in actor.story]
