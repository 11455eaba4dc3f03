"""`tgtwatch load --instance NAME`: load NAME's targets into its unit's tgtd (tgtd@NAME runs it)."""

from __future__ import annotations

from typing import TextIO

from tgtwatch.backends import envfile
from tgtwatch.backends.base import Result
from tgtwatch.backends.loading import load_targets
from tgtwatch.cli.exits import EXIT_OK, EXIT_PROBLEMS
from tgtwatch.config.settings import Settings
from tgtwatch.config.tgtconf import parse
from tgtwatch.config.trust import TrustedFiles, TrustPolicy
from tgtwatch.model.structs import InstanceKind, InstanceSpec
from tgtwatch.tgt.gateway import TgtCommandError, TgtControl, TgtPrograms


def run(settings: Settings, name: str, *, update: bool, out: TextIO, err: TextIO) -> int:
    """The unit's tgtd answers (offline while it starts): give it the targets of the
    snapshot render-env wrote, with the configured engine. Exit 1 with one line if not."""
    port = envfile.written_port(settings, name)
    snapshot = envfile.config_path(settings, name)
    if port is None:
        print(
            f"tgtwatch: {name}: no env file; run `tgtwatch render-env --instance {name}`", file=err
        )
        return EXIT_PROBLEMS
    # The snapshot is tgtwatch's own rendering, root's and private: read it with the same
    # trust rules and grammar as any instance file.
    parsed = parse(snapshot, TrustedFiles(snapshot.parent, TrustPolicy()))
    if parsed.tree is None:
        problem = parsed.problems[0].report() if parsed.problems else f"{snapshot}: unreadable"
        print(f"tgtwatch: {problem}", file=err)
        return EXIT_PROBLEMS
    spec = InstanceSpec(
        name,
        InstanceKind.DROPIN,
        port,
        "",
        port,
        settings.instances_dir / f"{name}.conf",
        parsed.sha256,
        text=parsed.flat,
        tree=parsed.tree,
    )
    control = TgtControl(port, TgtPrograms(), timeout_s=settings.tool_timeout_s)
    try:
        loaded = load_targets(
            spec,
            settings.engine,
            control=control,
            state_dir=settings.state_dir,
            snapshot=lambda: snapshot,
            update=update,
            timeout_s=settings.tool_timeout_s,
        )
    except TgtCommandError as exc:
        print(f"tgtwatch: {name}: {exc}", file=err)
        return EXIT_PROBLEMS
    if loaded.result is Result.FAILED:
        print(f"tgtwatch: {name}: loading failed{loaded.message}", file=err)
        return EXIT_PROBLEMS
    print(
        f"{name}: {settings.engine.value} engine on control port {port}{loaded.message}", file=out
    )
    return EXIT_OK
