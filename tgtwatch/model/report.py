"""Render plans, problems and instances for people (one line each) and for tools (JSON). Pure."""

from __future__ import annotations

from typing import Any

from tgtwatch.model.structs import (
    Action,
    AppliedEntry,
    Check,
    DrainStop,
    ObservedInstance,
    Plan,
    Problem,
)


def action_json(action: Action) -> dict[str, Any]:
    if isinstance(action, DrainStop):
        return {
            "action": action.kind.value,
            "name": action.name,
            "port": action.port,
            "config": str(action.config),
            "reason": action.reason,
        }
    spec = action.spec
    return {
        "action": action.kind.value,
        "name": spec.name,
        "port": spec.port,
        "portal": spec.portal,
        "control_port": spec.control_port,
        "config": str(spec.config),
        "sha256": spec.sha256,
        "targets": [{"name": t.name, "luns": t.luns} for t in spec.targets],
        **({"adopt": True} if getattr(action, "adopt", False) else {}),
        **({"drift": action.why} if isinstance(action, Check) and action.why else {}),
    }


def action_line(action: Action) -> str:
    if isinstance(action, DrainStop):
        return f"drain_stop {action.name} port {action.port} ({action.reason})"
    spec = action.spec
    adopt = " (adopt a running tgtd)" if getattr(action, "adopt", False) else ""
    why = getattr(action, "why", "")
    drifted = f" (drifted: {why})" if why else ""
    return (
        f"{action.kind.value} {spec.name} port {spec.port} {spec.config} "
        f"sha256 {spec.sha256[:12]}{adopt}{drifted}"
    )


def problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "path": str(problem.path),
        "line": problem.line,
        "rule": problem.rule.value,
        "message": problem.message,
    }


def _foreign_json(running: ObservedInstance) -> dict[str, Any]:
    return {"port": running.port, "control_port": running.control_port, "pid": running.pid}


def _held_json(entry: AppliedEntry) -> dict[str, Any]:
    return {"name": entry.name, "port": entry.port, "config": str(entry.config)}


def plan_json(plan: Plan, problems: tuple[Problem, ...], notes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "actions": [action_json(a) for a in plan.actions],
        "problems": [problem_json(p) for p in problems],
        "held": [_held_json(e) for e in plan.held],
        "foreign": [_foreign_json(f) for f in plan.foreign],
        "waiting": [{"port": p, "after": b} for p, b in plan.waiting],
        "notes": list(notes),
    }


def plan_lines(plan: Plan) -> list[str]:
    lines = [action_line(a) for a in plan.actions]
    lines += [
        f"hold {e.name} port {e.port}: {e.config} is refused, keeps its last good config"
        for e in plan.held
    ]
    lines += [
        f"leave port {f.port} (pid {f.pid}): a tgtd no file asks for and tgtwatch never applied"
        for f in plan.foreign
    ]
    lines += [f"wait port {p}: starts once port {b} has drained" for p, b in plan.waiting]
    return lines or ["nothing to do"]
