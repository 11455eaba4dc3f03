"""The last answer of a pure function, reused while it is called with the same arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

R = TypeVar("R")

# Compared by value (small, rebuilt every cycle); every other argument by identity: the
# cycle's big inputs (Desired, Observed, Applied) are the very same objects when unchanged.
_BY_VALUE = (dict, frozenset, set, tuple, str, int, float, type(None))


def _same(a: object, b: object) -> bool:
    return a is b or (type(a) is type(b) and isinstance(a, _BY_VALUE) and a == b)


class Memo(Generic[R]):
    """`fn` with a memory of one call: a cycle that changed nothing costs no O(n) pass."""

    def __init__(self, fn: Callable[..., R]) -> None:
        self.fn = fn
        self._args: tuple[object, ...] | None = None
        self._result: R | None = None

    def __call__(self, *args: object) -> R:
        last = self._args
        if (
            last is not None
            and len(last) == len(args)
            and all(_same(a, b) for a, b in zip(last, args, strict=True))
        ):
            return self._result  # type: ignore[return-value]
        result = self.fn(*args)
        self._args, self._result = args, result
        return result
