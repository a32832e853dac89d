"""Object ids that follow from a task's id, known to every side (client,
engine, scheduler): a generator task's item i is "<task id>/g<i>"."""
from __future__ import annotations


def item_id(task_id: str, index: int) -> str:
    return f"{task_id}/g{index}"


def is_item_id(object_id: str) -> bool:
    return object_id.rpartition("/")[2][:1] == "g"
