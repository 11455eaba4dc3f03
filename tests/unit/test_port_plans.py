"""PortPlans: plan() made again only for the ports that changed answers as plan() does."""

from __future__ import annotations

from dataclasses import replace

from builders import SHA_A, SHA_B, entry_for, running, spec
from hypothesis import given, settings
from hypothesis import strategies as st

from tgtwatch.model.lineage import NO_LINEAGE
from tgtwatch.model.plan import PortPlans, plan
from tgtwatch.model.structs import Applied, Desired, Observed

PORTS = (3261, 3262, 3263, 3264)
# Per port, a few objects each input may hold (the same object while it does not change).
SPECS = {
    p: (spec(f"i{p}", p, SHA_A), spec(f"i{p}", p, SHA_B), spec(f"j{p}", p, SHA_A)) for p in PORTS
}
ENTRIES = {p: (*(entry_for(s) for s in SPECS[p]), entry_for(SPECS[p][0], ("t",))) for p in PORTS}
RUNNING = {
    p: (
        running(p),
        running(p, sessions={"t": 1}),
        running(p, starting=True),
        running(p, control_port=p + 100),
        # Where one name runs one tgtd at a time (systemd's units): its own name, the
        # next port's (a start of that name waits), and one name on two ports.
        replace(running(p), instance=f"i{p}"),
        replace(running(p), instance=f"i{PORTS[(PORTS.index(p) + 1) % len(PORTS)]}"),
        replace(running(p), instance="i3261"),
    )
    for p in PORTS
}

# One step: a port's spec, entry or tgtd set to one of its objects (or none), or the
# checks due changed, or nothing (the same inputs again).
step = st.one_of(
    st.tuples(st.just("spec"), st.sampled_from(PORTS), st.integers(-1, 2)),
    st.tuples(st.just("entry"), st.sampled_from(PORTS), st.integers(-1, 3)),
    st.tuples(st.just("running"), st.sampled_from(PORTS), st.integers(-1, 6)),
    st.tuples(st.just("verify"), st.sampled_from(PORTS), st.booleans()),
    st.tuples(st.just("same"), st.just(0), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(step, st.booleans(), st.booleans()), min_size=1, max_size=30))
def test_port_plans_equal_plan_over_any_sequence_of_changes(
    steps: list[tuple[tuple[str, int, int], bool, bool]],
) -> None:
    chosen: dict[tuple[str, int], int] = {}  # (input, port) -> its object in the pool
    verify: set[int] = set()
    plans = PortPlans()
    made: list[tuple[Desired, Applied, Observed]] = []  # every step's inputs, kept alive
    for (kind, port, choice), planned, derived in steps:
        if kind == "verify":
            (verify.add if choice else verify.discard)(port)
        elif kind != "same":
            chosen[(kind, port)] = choice
        specs = {p: SPECS[p][c] for (k, p), c in sorted(chosen.items()) if k == "spec" and c >= 0}
        entries = {p: ENTRIES[p][c] for (k, p), c in chosen.items() if k == "entry" and c >= 0}
        instances = {p: RUNNING[p][c] for (k, p), c in chosen.items() if k == "running" and c >= 0}
        # New mappings each step, as the daemon's cycles make them; values kept as objects.
        # Derived: each made from the last step's by changing this step's port (its
        # lineage says so), as the scan's patch, a lane's end and a look at a started tgtd
        # make them; else made whole (no lineage: compared port by port).
        last = made[-1] if made and derived else None
        lineages = [
            NO_LINEAGE if last is None else old.lineage.after(old, [port] if kind == name else [])
            for old, name in zip(last or (None,) * 3, ("spec", "entry", "running"), strict=True)
        ]
        desired = Desired(specs, lineage=lineages[0])
        applied, observed = Applied(entries, lineages[1]), Observed(instances, lineages[2])
        made.append((desired, applied, observed))
        if not planned:
            continue  # a step no plan saw: the next is two steps from the last planned
        assert plans.plan(desired, applied, observed, frozenset(verify)) == plan(
            desired, applied, observed, frozenset(verify)
        )
