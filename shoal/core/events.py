"""The cluster's event stream, for widgets and other live views.

    sub = events.subscribe(lambda batch: ...)   # batch: messages.Events
    ...
    sub.close()

The first batch is a snapshot (the remembered task history and what runs
now; any batch with snapshot=True replaces what a view knew); then batches of news arrive at most ~10 times a second, on the
client's reader thread: handlers must be quick and must not block.
"""
from __future__ import annotations

from typing import Callable

from ..protocol import messages as m
from . import runtime


class Subscription:
    def __init__(self, client, handler: Callable[[m.Events], None]) -> None:
        self._client = client
        self._handler = handler
        client.event_handlers.append(handler)
        # Each subscription asks for a snapshot; every handler of this client
        # gets it, so a snapshot always means "this is the whole picture".
        client.send(m.SubscribeEvents(subscribe=True))

    @property
    def lost(self):
        """Why the stream ended (the cluster is gone), or None."""
        return self._client.lost

    def close(self) -> None:
        """Stop receiving; idempotent."""
        handlers = self._client.event_handlers
        if self._handler in handlers:
            handlers.remove(self._handler)
            if not handlers and not self._client.lost:
                self._client.send(m.SubscribeEvents(subscribe=False))


def subscribe(handler: Callable[[m.Events], None]) -> Subscription:
    """Call `handler(batch)` with every batch of cluster events from now on."""
    return Subscription(runtime.current().client, handler)
