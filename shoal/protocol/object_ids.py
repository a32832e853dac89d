"""Object ids that follow from a task's id, known to every side (client,
engine, scheduler): a generator task's item i is "<task id>/g<i>"."""
from __future__ import annotations


def item_id(task_id: str, index: int) -> str:
    return f"{task_id}/g{index}"


def task_of(object_id: str) -> str:
    """The task that makes an object ("<task id>/<n>"); a put's id is its own."""
    return object_id.rpartition("/")[0] or object_id


def is_item_id(object_id: str) -> bool:
    return object_id.rpartition("/")[2][:1] == "g"
