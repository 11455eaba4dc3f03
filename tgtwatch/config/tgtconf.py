"""Parse tgt config files as tgt-admin reads them (Perl Config::General, Apache-style include)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tgtwatch.model.structs import Problem, Rule, TargetSpec

MAX_CONFIG_BYTES = 1024 * 1024
# Config::General's own block kinds that carry a LUN inside a <target>.
LUN_KEYS = ("backing-store", "direct-store")
_BLOCK_OPEN = re.compile(r"^<\s*([^/\s>][^\s>]*)(?:\s+(.*?))?\s*>$")
_BLOCK_CLOSE = re.compile(r"^<\s*/\s*([^\s>]+)\s*>$")
_KEY_EQ_VALUE = re.compile(r"^([^=\s]+?)\s*=\s*(.*)$")
_KEY_SP_VALUE = re.compile(r"^(\S+)(?:\s+(.*))?$")
_GLOB_MAGIC = re.compile(r"[*?\[]")
# Config::General's -UseApacheInclude lines, matched before the key/value split.
_INCLUDE_QUOTED = re.compile(r"^\s*(include|includeoptional)\s*([\"'])(.*?)(?<!\\)\2$", re.I)
_INCLUDE_PLAIN = re.compile(r"^\s*(include|includeoptional)\s+(.+?)\s*$", re.I)


class SourceError(Exception):
    """A file the parser was asked to read cannot be used; carries the rule it broke."""

    def __init__(self, message: str, rule: Rule = Rule.INCLUDE) -> None:
        super().__init__(message)
        self.rule = rule


class FileSource(Protocol):
    """Where the parser gets bytes from: the real, trust-checking filesystem or a fake."""

    def read(self, path: Path) -> bytes:
        """The file's bytes; raises SourceError when it may not or cannot be read."""
        ...

    def expand(self, pattern: Path) -> list[Path]:
        """An include's files: glob matches or a directory's files, sorted; [] for no match."""
        ...


@dataclass(frozen=True)
class Option:
    key: str
    value: str
    line: int
    path: Path


@dataclass
class _Block:
    kind: str
    name: str
    line: int
    path: Path
    options: list[Option] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedConfig:
    """One config file with its include closure, read the way tgt-admin reads it."""

    path: Path
    options: tuple[Option, ...]
    targets: tuple[TargetSpec, ...]
    files: tuple[Path, ...]
    sha256: str
    problems: tuple[Problem, ...]
    flat: str = ""  # the closure as one include-free config, for tgt-admin

    def values(self, key: str) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.key == key)


@dataclass(frozen=True)
class _Line:
    number: int
    text: str
    continued: bool = False  # joined from backslash-continued lines: never an include


def decode(data: bytes, path: Path) -> tuple[str | None, Problem | None]:
    """Text of a config file, or the problem that makes it unreadable as one."""
    if len(data) > MAX_CONFIG_BYTES:
        return None, Problem(
            path, Rule.TRUST, f"file is {len(data)} bytes, more than the {MAX_CONFIG_BYTES} allowed"
        )
    nul = data.find(b"\0")
    if nul >= 0:
        return None, Problem(
            path,
            Rule.SYNTAX,
            "binary data (NUL byte), not a config file",
            data.count(b"\n", 0, nul) + 1,
        )
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, Problem(path, Rule.SYNTAX, "invalid UTF-8, not a config file", line)


_C_COMMENT_ON_LINE = re.compile(r"\s*/\*.*\*/\s*")
_C_COMMENT_START = re.compile(r"^\s*/\*")
_C_COMMENT_END = re.compile(r"\*/\s*$")
_HASH_COMMENT = re.compile(r"(?<!\\)#.*$")
_CONTINUED = re.compile(r"(?<!\\)\\$")  # a trailing backslash, not an escaped one


def _strip_comments(text: str) -> Iterator[_Line]:
    """Physical lines without comments (#, C-style), joined at trailing backslashes.

    C comments follow Config::General exactly: `/* ... */` within one line, or a comment
    that starts a line and runs to a line with `*/`; a `/*` inside a value (as in
    `include conf.d/*.conf`) is not a comment. Lines end at `\n` only, as in Perl.
    """
    in_c_comment = False
    pending: list[str] = []
    pending_line = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw
        if _C_COMMENT_ON_LINE.search(line):
            line = _C_COMMENT_ON_LINE.sub("", line, count=1)
        elif _C_COMMENT_START.match(line):
            in_c_comment = not _C_COMMENT_END.search(line)
        elif "*/" in line:
            in_c_comment = False
            line = line[line.rindex("*/") + 2 :]
        if in_c_comment:
            continue
        line = _HASH_COMMENT.sub("", line).replace("\\#", "#")
        if _CONTINUED.search(line):
            if not pending:
                pending_line = number
            pending.append(line[:-1].lstrip())
            continue
        if pending:
            pending.append(line.lstrip())
            yield _Line(pending_line, "".join(pending).strip(), continued=True)
            pending = []
            continue
        stripped = line.strip()
        if stripped:
            yield _Line(number, stripped)
    if pending:
        yield _Line(pending_line, "".join(pending).strip(), continued=True)


def _escaped(text: str) -> str:
    """A logical line written back so Config::General reads it the same (`#` was `\\#`)."""
    return text.replace("#", "\\#")


def _unquote(value: str) -> str:
    """Config::General: a value starting and ending with `"` loses both (`"` alone is empty)."""
    if value.startswith('"') and value.endswith('"'):
        return value[1:-1] if len(value) >= 2 else ""
    return value


class _Reader:
    """Walks one config file and its includes into a tree of blocks."""

    def __init__(self, source: FileSource, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.files: list[Path] = []
        self.digest = hashlib.sha256()
        self.problems: list[Problem] = []
        # The config as tgt-admin will be given it: comments gone, continuations joined,
        # includes replaced by what they included. Nothing is read again by name later.
        self.flat: list[str] = []

    def load(self, path: Path, into: list[_Block], include_line: tuple[Path, int] | None) -> None:
        if path in self.files:
            where, line = include_line if include_line else (path, None)
            self.problems.append(
                Problem(where, Rule.INCLUDE, f"include cycle: {path} is already loaded", line)
            )
            return
        try:
            data = self.source.read(path)
        except SourceError as exc:
            if include_line is None:
                self.problems.append(Problem(path, exc.rule, str(exc)))
            else:
                where, line = include_line
                self.problems.append(Problem(where, exc.rule, f"include {path}: {exc}", line))
            return
        self.files.append(path)
        self.digest.update(f"{path}\0{len(data)}\0".encode())
        self.digest.update(data)
        text, problem = decode(data, path)
        if problem is not None or text is None:
            self.problems.append(problem or Problem(path, Rule.SYNTAX, "unreadable"))
            return
        self._parse(path, text, into)

    def _parse(self, path: Path, text: str, stack: list[_Block]) -> None:
        depth = len(stack)
        try:
            self._parse_lines(path, text, stack, depth)
        finally:
            # A file only closes what it opened: an include's broken or unclosed blocks
            # never swallow the lines of the file that included it.
            del stack[depth:]

    def _parse_lines(self, path: Path, text: str, stack: list[_Block], depth: int) -> None:
        for line in _strip_comments(text):
            current = stack[-1]
            closing = _BLOCK_CLOSE.match(line.text)
            if closing:
                kind = closing.group(1)
                if len(stack) <= depth:
                    self.problems.append(
                        Problem(path, Rule.SYNTAX, f"</{kind}> closes no open block", line.number)
                    )
                    return
                if current.kind != kind:
                    self.problems.append(
                        Problem(
                            path,
                            Rule.SYNTAX,
                            f"</{kind}> does not close <{current.kind}> "
                            f"opened at line {current.line}",
                            line.number,
                        )
                    )
                    return
                stack.pop()
                self.flat.append(line.text)
                continue
            # Config::General's explicit empty block: `<name value/>` is `<name value>`
            # immediately closed.
            empty = line.text.endswith("/>")
            opening = _BLOCK_OPEN.match(line.text[:-2] + ">" if empty else line.text)
            if opening:
                block = _Block(
                    opening.group(1), _unquote(opening.group(2) or ""), line.number, path
                )
                current.blocks.append(block)
                if not empty:
                    stack.append(block)
                self.flat.append(_escaped(line.text))
                continue
            if line.text.startswith("<"):
                self.problems.append(
                    Problem(
                        path, Rule.SYNTAX, f"malformed block tag {line.text[:60]!r}", line.number
                    )
                )
                return
            include = None
            if not line.continued:
                include = _INCLUDE_QUOTED.match(line.text) or _INCLUDE_PLAIN.match(line.text)
            if include is not None:
                optional = include.group(1).lower() == "includeoptional"
                value = include.group(include.lastindex or 0)
                self._include(path, line.number, value, stack, optional)
                continue
            match = _KEY_EQ_VALUE.match(line.text) or _KEY_SP_VALUE.match(line.text)
            if match is None:  # pragma: no cover - every non-empty line matches one of them
                continue
            key, value = match.group(1), _unquote((match.group(2) or "").strip())
            current.options.append(Option(key, value, line.number, path))
            if key.lower() not in ("include", "includeoptional"):
                # (a continued `include` line is a plain option, and meaningless to tgt-admin:
                # on one line it would become a real include)
                self.flat.append(_escaped(line.text))
        if len(stack) > depth:
            block = stack[-1]
            self.problems.append(
                Problem(path, Rule.SYNTAX, f"<{block.kind}> is never closed", block.line)
            )

    def _include(
        self, path: Path, line: int, value: str, stack: list[_Block], optional: bool = False
    ) -> None:
        if not value:
            self.problems.append(Problem(path, Rule.SYNTAX, "include without a file", line))
            return
        pattern = Path(value) if Path(value).is_absolute() else self.base_dir / value
        try:
            matches = self.source.expand(pattern)
        except SourceError as exc:
            self.problems.append(Problem(path, exc.rule, f"include {value}: {exc}", line))
            return
        if optional and not _GLOB_MAGIC.search(value):
            # IncludeOptional: Config::General globs the name itself, so only that file.
            matches = [m for m in matches if m == pattern]
        elif not matches and not _GLOB_MAGIC.search(value):
            self.problems.append(
                Problem(path, Rule.INCLUDE, f"include {value}: no such file", line)
            )
        for match in matches:
            self.load(match, stack, (path, line))


# tgt-admin builds each tgtadm command as one string and runs it with system(), through
# /bin/sh: these characters in a target's name or in any value inside a <target> would be
# read by the shell (command substitution, a second command, a redirection, a glob).
SHELL_SPECIAL = frozenset("`$;|&<>()\\\"'*?[\n\r")


def shell_problem(text: str) -> str | None:
    """Why tgt-admin's shell would not pass `text` through as one plain word, or None."""
    bad = sorted({c for c in text if c in SHELL_SPECIAL})
    return f"characters tgt-admin's shell would interpret: {''.join(bad)!r}" if bad else None


def _shell_problems(block: _Block, problems: list[Problem], where: str) -> None:
    for option in block.options:
        why = shell_problem(option.value)
        if why is not None:
            problems.append(
                Problem(option.path, Rule.SYNTAX, f"{where}: {option.key}: {why}", option.line)
            )
    for child in block.blocks:
        why = shell_problem(child.name)
        if why is not None:
            problems.append(
                Problem(child.path, Rule.SYNTAX, f"{where}: <{child.kind}>: {why}", child.line)
            )
        _shell_problems(child, problems, where)


def _feed(block: _Block, digest: Any) -> None:
    for option in block.options:
        digest.update(f"{option.key}\0{option.value}\n".encode())
    for child in block.blocks:
        digest.update(f"<{child.kind}\0{child.name}>\n".encode())
        _feed(child, digest)
        digest.update(b"</>\n")


def _targets(root: _Block, problems: list[Problem]) -> tuple[TargetSpec, ...]:
    """Targets after Config::General's -MergeDuplicateBlocks, with distinct LUN paths."""
    luns: dict[str, list[str]] = {}
    digests: dict[str, Any] = {}
    globals_digest = hashlib.sha256()
    for option in root.options:
        globals_digest.update(f"{option.key}\0{option.value}\n".encode())
    for block in root.blocks:
        if block.kind != "target":
            continue
        if not block.name:
            problems.append(Problem(block.path, Rule.SYNTAX, "<target> without a name", block.line))
            continue
        why = shell_problem(block.name)
        if why is not None:
            problems.append(Problem(block.path, Rule.SYNTAX, f"target name: {why}", block.line))
            continue
        _shell_problems(block, problems, f"target {block.name}")
        paths = luns.setdefault(block.name, [])
        _feed(block, digests.setdefault(block.name, globals_digest.copy()))
        for key in LUN_KEYS:
            as_options = [o.value for o in block.options if o.key == key]
            as_blocks = [b.name for b in block.blocks if b.kind == key]
            if as_options and as_blocks:
                # Config::General refuses to mix `key value` and `<key value>` in one block.
                problems.append(
                    Problem(
                        block.path,
                        Rule.SYNTAX,
                        f"target {block.name}: {key} given both as a line and as a block",
                        block.line,
                    )
                )
            for lun in as_options + as_blocks:
                if lun and lun not in paths:
                    paths.append(lun)
    return tuple(
        TargetSpec(name, len(paths), digests[name].hexdigest(), tuple(paths))
        for name, paths in sorted(luns.items())
    )


def parse(path: Path, source: FileSource, base_dir: Path | None = None) -> ParsedConfig:
    """Read `path` and its includes; relative includes resolve against `base_dir`.

    tgt-admin resolves them against its working directory, and tgtwatch runs it from the
    config file's directory, which is the default here: both always agree. Never raises.
    """
    reader = _Reader(source, base_dir if base_dir is not None else path.parent)
    root = _Block("", "", 0, path)
    reader.load(path, [root], None)
    problems = reader.problems
    targets = _targets(root, problems)
    return ParsedConfig(
        path=path,
        options=tuple(root.options),
        targets=targets,
        files=tuple(reader.files),
        sha256=reader.digest.hexdigest(),
        problems=tuple(problems),
        flat="".join(f"{line}\n" for line in reader.flat),
    )


def render(options: list[tuple[str, str]], targets: dict[str, list[str]]) -> str:
    """A config text with these top-level options and targets (name -> LUN paths)."""
    lines = [f'{key}="{value}"' for key, value in options]
    for name, luns in targets.items():
        lines.append(f"<target {name}>")
        lines.extend(f"    backing-store {lun}" for lun in luns)
        lines.append("</target>")
    return "\n".join(lines) + "\n"
