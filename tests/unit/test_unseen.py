"""unseen_problems with the caller's memo of entries found inside answers as without it."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tgtwatch.config.unseen import unseen_problems
from tgtwatch.model.structs import Applied, AppliedEntry, InstanceKind


def entry(port: int, config: Path, kind: InstanceKind = InstanceKind.DROPIN) -> AppliedEntry:
    return AppliedEntry(f"i{port}", port, config, "0" * 64, 0.0, kind=kind)


@given(
    st.lists(
        st.tuples(
            st.integers(1, 6),  # port
            st.sampled_from(["in", "out", "default"]),  # where its file is
        ),
        max_size=30,
    )
)
def test_the_memo_never_hides_an_entry_that_moved_outside(steps: list[tuple[int, str]]) -> None:
    # Each step replaces one port's entry (a new object, as the reconciler's settle does)
    # and asks both ways; a file outside the directory that still exists stays a problem.
    directory = Path("/nonexistent-dir/conf.d")
    outside = Path(__file__)  # exists, so it is "held", not "gone"
    memo: dict[int, AppliedEntry] = {}
    entries: dict[int, AppliedEntry] = {}
    for port, where in steps:
        if where == "default":
            entries[port] = entry(port, Path("/etc/tgt/targets.conf"), InstanceKind.DEFAULT)
        else:
            config = directory / f"i{port}.conf" if where == "in" else outside
            entries[port] = entry(port, config)
        applied = Applied(dict(entries))
        assert unseen_problems(directory, applied, memo) == unseen_problems(directory, applied)


def test_an_entry_outside_the_directory_is_held_and_named() -> None:
    directory = Path("/nonexistent-dir/conf.d")
    memo: dict[int, AppliedEntry] = {}
    inside = entry(1, directory / "a.conf")
    moved = entry(1, Path(__file__))
    assert [p.path for p in unseen_problems(directory, Applied({1: inside}), memo)] == [directory]
    assert id(inside) in memo  # nothing to say of it: not tested again while it is applied
    found = unseen_problems(directory, Applied({1: moved}), memo)
    assert [p.path for p in found] == [directory, Path(__file__)]
    assert "outside instances_dir" in found[1].message
