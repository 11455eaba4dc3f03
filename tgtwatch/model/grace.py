"""Delete grace: a drain whose file vanished waits a moment in case the file comes back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tgtwatch.model.structs import Action, Desired, DrainStop


@dataclass(frozen=True)
class Graced:
    """The actions to run now, the drains held back (port -> when they are due), and when
    each held port's file was first seen gone (carried to the next cycle)."""

    actions: tuple[Action, ...]
    held: Mapping[int, float] = field(default_factory=dict)
    gone_since: Mapping[int, float] = field(default_factory=dict)


def hold_drains(
    actions: Sequence[Action],
    desired: Desired,
    gone_since: Mapping[int, float],
    now: float,
    grace_s: float,
) -> Graced:
    """Hold back each drain whose file no longer exists until `grace_s` after the cycle
    that first saw it gone. Tools delete or move a file away and write it again within
    milliseconds (vim's rename to a backup, `install`'s unlink): the file that comes back
    ends the grace, and its port never drains. A drain drains at once where a file still
    wants its config elsewhere (a port change) or another file wants its port (a rename):
    nothing is coming back there, and only the drain's own port is held, never a start.
    A port no longer draining forgets its time, so a later delete gets a grace of its own.
    """
    if grace_s <= 0 or not any(isinstance(a, DrainStop) for a in actions):
        return Graced(tuple(actions))
    wanted = {spec.config for spec in desired.instances.values()}
    kept: list[Action] = []
    held: dict[int, float] = {}
    since: dict[int, float] = {}
    for action in actions:
        if (
            not isinstance(action, DrainStop)
            or action.config in wanted
            or action.port in desired.instances
        ):
            kept.append(action)
            continue
        first = gone_since.get(action.port, now)
        # A clock that went backwards must not stretch the grace without end.
        first = min(first, now)
        since[action.port] = first
        if now < first + grace_s:
            held[action.port] = first + grace_s
        else:
            kept.append(action)
    return Graced(tuple(kept), held, since)
