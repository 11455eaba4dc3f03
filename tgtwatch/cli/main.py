"""The command line `tgtwatch [-c CONFIG] COMMAND`: one-line errors, meaningful exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Protocol, TextIO

from tgtwatch import __version__
from tgtwatch.backends import envfile, install
from tgtwatch.cli import accounts_cmd, commands, load_cmd, render_env, wait
from tgtwatch.cli.exits import EXIT_INTERNAL, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE
from tgtwatch.cli.wiring import make_backend
from tgtwatch.config import inventory, rules
from tgtwatch.config.settings import DEFAULT_SETTINGS_PATH, Settings, SettingsError, load
from tgtwatch.daemon.state import StateError, StateFile
from tgtwatch.model.plan import plan
from tgtwatch.model.report import plan_json, plan_lines
from tgtwatch.model.structs import DEFAULT_NAME, Observed


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse's own exit code is already 2; keep its usage line, drop nothing.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"tgtwatch: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tgtwatch", description=__doc__)
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help=f"settings file (default {DEFAULT_SETTINGS_PATH}, optional)",
    )
    parser.add_argument("--version", action="version", version=f"tgtwatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("check", help="validate every file; one line per problem")
    plan_cmd = commands.add_parser("plan", help="what `run` would do now, without doing it")
    plan_cmd.add_argument("--json", action="store_true")
    commands.add_parser("run", help="the daemon, in the foreground")
    commands.add_parser("apply", help="one reconcile cycle, then exit (0: converged)")
    status_cmd = commands.add_parser("status", help="every instance, its state and its problems")
    status_cmd.add_argument("--json", action="store_true")
    drain_cmd = commands.add_parser("drain", help="drain and stop the tgtd on one port")
    drain_cmd.add_argument("--port", type=int, required=True)
    drain_cmd.add_argument("--timeout", type=float, default=None, metavar="S")
    drain_cmd.add_argument("--force", action="store_true")
    wait_cmd = commands.add_parser(
        "wait", help="until each instance runs its file's current content (0), or why not"
    )
    wait_cmd.add_argument("names", nargs="+", type=_instance_name, metavar="NAME")
    wait_cmd.add_argument(
        "--timeout",
        type=_seconds,
        default=wait.DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"give up after S seconds, exit 124 (default {wait.DEFAULT_TIMEOUT_S:g})",
    )
    env_cmd = commands.add_parser(
        "render-env", help="validate NAME.conf and write the env file tgtd@NAME.service reads"
    )
    env_cmd.add_argument("--instance", required=True, metavar="NAME")
    env_cmd.add_argument(
        "--same-port", action="store_true", help="refuse a port change (a reload cannot do it)"
    )
    accounts_cmd = commands.add_parser(
        "accounts",
        help="bind NAME's CHAP accounts in its tgtd over the control socket (tgtd@NAME runs it)",
    )
    accounts_cmd.add_argument("--instance", required=True, metavar="NAME")
    load_parser = commands.add_parser(
        "load",
        help="load NAME's targets into its tgtd with the configured engine (tgtd@NAME runs it)",
    )
    load_parser.add_argument("--instance", required=True, metavar="NAME")
    load_parser.add_argument(
        "--update", action="store_true", help="a reload of a running tgtd (tgt-admin --update)"
    )
    units_cmd = commands.add_parser(
        "install-units", help="install the systemd units, settings and /etc/mytgt/conf.d"
    )
    units_cmd.add_argument("--root", type=Path, default=Path("/"), help="install below this root")
    units_cmd.add_argument("--no-reload", action="store_true", help="skip systemctl daemon-reload")
    return parser


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _instance_name(text: str) -> str:
    problem = None if text == DEFAULT_NAME else rules.name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _settings(path: Path | None) -> Settings:
    return load(path or DEFAULT_SETTINGS_PATH, required=path is not None)


class _Observer(Protocol):
    def observe(
        self, detail: Collection[int] | None = None, pids: Collection[int] | None = None
    ) -> Observed: ...


BackendFactory = Callable[[Settings], _Observer]


def cmd_check(settings: Settings, out: TextIO, err: TextIO) -> int:
    applied, _ = StateFile(settings.state_dir).load()
    desired = inventory.scan(settings, applied)
    for note in desired.notes:
        print(note, file=out)
    for problem in desired.problems:
        print(problem.report(), file=out)
    names = ", ".join(f"{s.name}:{s.port}" for s in desired.instances.values()) or "none"
    print(
        f"{len(desired.instances)} instances ({names}), {len(desired.problems)} problems",
        file=err,
    )
    return EXIT_PROBLEMS if desired.problems else EXIT_OK


def cmd_plan(
    settings: Settings, as_json: bool, out: TextIO, backend_factory: BackendFactory = make_backend
) -> int:
    applied, warning = StateFile(settings.state_dir).load()
    desired = inventory.scan(settings, applied)
    result = plan(desired, applied, backend_factory(settings).observe(None))
    if as_json:
        body = plan_json(result, desired.problems, desired.notes + ((warning,) if warning else ()))
        json.dump(body, out, indent=2)
        out.write("\n")
    else:
        for line in plan_lines(result):
            print(line, file=out)
        for problem in desired.problems:
            print(f"problem {problem.report()}", file=out)
    return EXIT_PROBLEMS if desired.problems else EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    *,
    backend_factory: BackendFactory = make_backend,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args.config)
        return _dispatch(args, settings, out, err, backend_factory)
    except SettingsError as exc:
        print(f"tgtwatch: {exc}", file=err)
        return EXIT_USAGE
    except BrokenPipeError:
        raise
    except (StateError, OSError) as exc:
        print(f"tgtwatch: {exc}", file=err)
        return EXIT_PROBLEMS


def _dispatch(
    args: argparse.Namespace,
    settings: Settings,
    out: TextIO,
    err: TextIO,
    backend_factory: BackendFactory,
) -> int:
    if args.command == "check":
        return cmd_check(settings, out, err)
    if args.command == "plan":
        return cmd_plan(settings, args.json, out, backend_factory)
    if args.command == "apply":
        return commands.apply(settings, out, err)
    if args.command == "status":
        return commands.status(settings, args.json, out)
    if args.command == "drain":
        return commands.drain(settings, args.port, args.timeout, args.force, out, err)
    if args.command == "wait":
        return wait.wait(settings, args.names, args.timeout, out)
    if args.command == "render-env":
        try:
            print(render_env.write(settings, args.instance, same_port=args.same_port), file=out)
        except envfile.EnvFileError as exc:
            print(f"tgtwatch: {exc}", file=err)
            return EXIT_PROBLEMS
        return EXIT_OK
    if args.command == "accounts":
        return accounts_cmd.run(settings, args.instance, out, err)
    if args.command == "load":
        return load_cmd.run(settings, args.instance, update=args.update, out=out, err=err)
    if args.command == "install-units":
        try:
            reload = not args.no_reload and args.root == Path("/")
            for line in install.install(args.root, install.units_source(), daemon_reload=reload):
                print(line, file=out)
        except install.InstallError as exc:
            print(f"tgtwatch: {exc}", file=err)
            return EXIT_PROBLEMS
        return EXIT_OK
    if args.command == "run":
        # Imported here: the daemon's watcher and metrics cost 120 ms to import, and every
        # `systemctl start/stop tgtd@NAME` runs `render-env` or `drain` in a fresh process.
        from tgtwatch.cli import run as runner  # noqa: PLC0415

        return runner.run(args.config or DEFAULT_SETTINGS_PATH, settings, err)
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover


def main_entry() -> None:
    """Console script: never a traceback for the operator."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # `tgtwatch plan | head`: the reader left; nothing to tell anyone.
        sys.stderr.close()
        code = EXIT_OK
    except Exception as exc:  # the last line of defence: one line, never a traceback
        print(f"tgtwatch: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = EXIT_INTERNAL
    sys.exit(code)
