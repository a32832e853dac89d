"""Ray shows ids as hex strings; shoal's ids are short ASCII names
("h3f2a.e1", "9c01e2.A4").  The hex form is the name's bytes in hex: stable,
distinct for distinct ids, and reversible, so a hex id a user passes back
(NodeAffinitySchedulingStrategy(node_id)) names the same thing."""
from __future__ import annotations

from typing import Optional


def to_hex(shoal_id: Optional[str]) -> Optional[str]:
    return None if shoal_id is None else shoal_id.encode().hex()


def from_hex(hex_id: str) -> str:
    """The shoal id of a hex id; ValueError for a string that is not one."""
    try:
        return bytes.fromhex(hex_id).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{hex_id!r} is not a shoal id in hex (as get_node_id() and nodes() "
                         "give them)") from None
