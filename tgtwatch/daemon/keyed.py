"""Which ports of a mapping changed since the last look, found by C-level passes over it."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress, repeat
from operator import is_not, ne

_ABSENT = object()


class Changes:
    """The keys whose value differs from the previous mapping seen (added and removed too).

    `by_identity`: values are frozen objects that stay the same object while unchanged
    (specs, applied entries, observed tgtds), compared with `is`; the mapping itself is
    never changed in place (it is held by a frozen Desired, Applied or Observed), so the
    same mapping again is no change at all. Else values are compared by value (strings,
    flags), and the mapping may be one changed in place.
    Every pass over a whole mapping runs in C (map(), compress(), set difference); the
    Python-level work is per changed key, in the caller.
    """

    def __init__(self, *, by_identity: bool) -> None:
        self.by_identity = by_identity
        self._differ = is_not if by_identity else ne
        self._source: Mapping[int, object] | None = None
        self._last: dict[int, object] = {}  # a copy: holds the values compared with
        self._keys: list[int] = []  # its keys and values, in order
        self._values: list[object] = []

    def changed(self, mapping: Mapping[int, object]) -> set[int]:
        last = self._last
        if (self.by_identity and mapping is self._source) or (not mapping and not last):
            return set()
        keys, values = list(mapping.keys()), list(mapping.values())
        known = len(self._keys)
        if keys[:known] == self._keys:
            # The same keys in the same order, maybe more after them (a mapping copied
            # with one port added, as a lane's end makes): compared pairwise.
            found = set(compress(keys, map(self._differ, values, self._values)))
            found.update(keys[known:])
        else:
            olds = map(last.get, keys, repeat(_ABSENT))
            found = set(compress(keys, map(self._differ, values, olds)))
            found |= last.keys() - mapping.keys()
        self._source, self._last = mapping, dict(mapping)
        self._keys, self._values = keys, values
        return found

    def forget(self) -> None:
        """The next look reports every key of the mapping it is given."""
        self._source, self._last, self._keys, self._values = None, {}, [], []
