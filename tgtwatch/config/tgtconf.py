"""Read a tgt config and its includes as tgt-admin's Config::General does, into the typed tree.

tgt-admin calls `ParseConfig(-ConfigFile => F, -UseApacheInclude => 1,
-IncludeDirectories => 1, -IncludeGlob => 1, -MergeDuplicateBlocks => 1)`: lines as
lexer.py reads them, `include` of a file, a directory (its files, sorted) or a glob (`*`,
`?`; sorted), relative to the directory tgt-admin runs in (the config's). Blocks, keys and
values then go through the grammar (grammar.py): what reaches tgt programs is rendered
from the typed tree (render.py), never copied from the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tgtwatch.config import grammar, render
from tgtwatch.config.grammar import DEFAULT_LIMITS, MAX_PROBLEMS, Dialect, Limits
from tgtwatch.config.lexer import LexError, LineKind, lex
from tgtwatch.config.raw import Block, Option
from tgtwatch.model.structs import Problem, Rule, TargetSpec
from tgtwatch.model.tree import ConfigTree

MAX_CONFIG_BYTES = 1024 * 1024
_GLOB_MAGIC = re.compile(r"[*?]")
# An include names files by path or glob: plain components, `*` and `?` (no `[`, `{` or
# `\`, which Perl's bsd_glob and Python's glob read differently).
_INCLUDE_PATH = re.compile(r"[A-Za-z0-9._+:@*?/-]+")
MAX_INCLUDE_PATH = 4095
MAX_INCLUDE_DEPTH = 16


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
        """An include's files: glob matches or a directory's files, sorted; [] for no match.
        Raises SourceError when the name cannot be looked up."""
        ...


@dataclass(frozen=True)
class ParsedConfig:
    """One config file with its include closure: the typed tree, or why there is none."""

    path: Path
    options: tuple[Option, ...]  # top-level key/value lines, as read
    targets: tuple[TargetSpec, ...]
    files: tuple[Path, ...]
    sha256: str  # of every file read, in order
    problems: tuple[Problem, ...]
    flat: str = ""  # the canonical rendering of the tree: all tgt-admin is ever given
    tree: ConfigTree | None = field(default=None, compare=False, repr=False)
    # Where each include looks for its files (looked_in()): a new file there changes it.
    looked_in: tuple[Path, ...] = ()

    def values(self, key: str) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.key == key)

    @property
    def include_dirs(self) -> tuple[Path, ...]:
        """Where the includes look, but the files they read (watched through their own
        directory): the directories to watch for a file new to an include."""
        read = set(self.files)
        return tuple(d for d in self.looked_in if d not in read)


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


class _TooMany(Exception):
    """Enough problems were found: reading the rest would only find more (and cost time)."""


class _Reader:
    """Walks one config file and its includes into a tree of blocks."""

    def __init__(self, source: FileSource, base_dir: Path, limits: Limits) -> None:
        self.source = source
        self.base_dir = base_dir
        self.limits = limits
        self.files: list[Path] = []
        self.digest = hashlib.sha256()
        self.problems: list[Problem] = []
        self.depth = 0  # how many files are being read, one inside the other
        self.looked_in: list[Path] = []

    def _problem(self, problem: Problem) -> None:
        self.problems.append(problem)
        if len(self.problems) >= MAX_PROBLEMS or problem.rule is Rule.LIMIT:
            raise _TooMany

    def load(self, path: Path, stack: list[Block], include_line: tuple[Path, int] | None) -> None:
        where, line = include_line if include_line else (path, None)
        if path in self.files:
            self._problem(
                Problem(where, Rule.INCLUDE, f"include cycle: {path} is already loaded", line)
            )
            return
        if self.depth > MAX_INCLUDE_DEPTH:
            self._problem(
                Problem(where, Rule.LIMIT, f"includes nested deeper than {MAX_INCLUDE_DEPTH}", line)
            )
            return
        if len(self.files) >= self.limits.files_per_config:
            self._problem(
                Problem(
                    where,
                    Rule.LIMIT,
                    f"more than {self.limits.files_per_config} files included",
                    line,
                )
            )
            return
        try:
            data = self.source.read(path)
        except SourceError as exc:
            message = str(exc) if include_line is None else f"include {path}: {exc}"
            self._problem(Problem(where, exc.rule, message, line))
            return
        self.files.append(path)
        self.digest.update(f"{path}\0{len(data)}\0".encode())
        self.digest.update(data)
        text, problem = decode(data, path)
        if problem is not None or text is None:
            self._problem(problem or Problem(path, Rule.SYNTAX, "unreadable"))
            return
        depth = len(stack)
        self.depth += 1
        try:
            self._parse(path, text, stack, depth)
        except LexError as exc:
            self._problem(Problem(path, Rule.SYNTAX, str(exc), exc.number))
        finally:
            # A file only closes what it opened: an include's broken or unclosed blocks
            # never swallow the lines of the file that included it.
            del stack[depth:]
            self.depth -= 1

    def _parse(self, path: Path, text: str, stack: list[Block], depth: int) -> None:
        for line in lex(text):
            current = stack[-1]
            if line.kind is LineKind.OPEN:
                block = Block(line.key, line.value, line.number, path)
                current.blocks.append(block)
                stack.append(block)
            elif line.kind is LineKind.CLOSE:
                if len(stack) <= depth:
                    raise LexError(line.number, f"</{line.key}> closes no open block")
                if current.kind != line.key:
                    raise LexError(
                        line.number,
                        f"</{line.key}> does not close <{current.kind}> opened at line "
                        f"{current.line}",
                    )
                stack.pop()
            elif line.kind is LineKind.INCLUDE:
                self._include(path, line.number, line.value or "", line.key, stack)
            else:
                current.options.append(Option(line.key, line.value, line.number, path))
        if len(stack) > depth:
            block = stack[-1]
            raise LexError(block.line, f"<{block.kind}> is never closed")

    def _include(self, path: Path, line: int, value: str, keyword: str, stack: list[Block]) -> None:
        if len(value) > MAX_INCLUDE_PATH or not _INCLUDE_PATH.fullmatch(value):
            raise LexError(
                line,
                f"{keyword} {value[:80]!r}: a file name of letters, digits, '._+:@-/' and "
                "the globs '*' and '?' only",
            )
        if any(len(part) > 255 for part in value.split("/")):
            raise LexError(line, f"{keyword}: a path component longer than 255 bytes")
        pattern = Path(value) if value.startswith("/") else self.base_dir / value
        try:
            matches = self.source.expand(pattern)
        except SourceError as exc:  # refused outside its tree, too: nothing to watch there
            self._problem(Problem(path, exc.rule, f"include {value}: {exc}", line))
            return
        self.looked_in.append(looked_in(pattern))
        if keyword == "includeoptional" and not _GLOB_MAGIC.search(value):
            # IncludeOptional: Config::General globs the name itself, so only that file.
            matches = [m for m in matches if m == pattern]
        elif not matches and not _GLOB_MAGIC.search(value):
            self._problem(Problem(path, Rule.INCLUDE, f"include {value}: no such file", line))
        for match in matches:
            self.load(match, stack, (path, line))


def looked_in(pattern: Path) -> Path:
    """Where a file new to an include would appear: a glob's directories up to its first
    wildcard; else the name itself (a directory included whole, or a file). Pure."""
    for index, part in enumerate(pattern.parts):
        if _GLOB_MAGIC.search(part):
            return Path(*pattern.parts[:index])
    return pattern


@dataclass(frozen=True)
class Reading:
    """A config and its includes read into untyped blocks, before any grammar."""

    root: Block
    files: tuple[Path, ...]
    sha256: str
    problems: tuple[Problem, ...]
    looked_in: tuple[Path, ...] = ()


def read(
    path: Path, source: FileSource, base_dir: Path | None = None, limits: Limits = DEFAULT_LIMITS
) -> Reading:
    """The blocks Config::General would read from `path` and its includes (relative ones
    against `base_dir`, by default the config's directory, where tgt-admin would run),
    or the problems of what it would read differently. Never raises."""
    reader = _Reader(source, base_dir if base_dir is not None else path.parent, limits)
    root = Block("", None, 0, path)
    with contextlib.suppress(_TooMany):  # the problems say enough; the file is refused
        reader.load(path, [root], None)
    looked = tuple(dict.fromkeys(reader.looked_in))
    return Reading(
        root, tuple(reader.files), reader.digest.hexdigest(), tuple(reader.problems), looked
    )


def parse(
    path: Path,
    source: FileSource,
    base_dir: Path | None = None,
    *,
    dialect: Dialect = Dialect.INSTANCE,
    limits: Limits = DEFAULT_LIMITS,
) -> ParsedConfig:
    """Read `path` and its includes and check them against the grammar. Never raises."""
    reading = read(path, source, base_dir, limits)
    root, files, sha256 = reading.root, reading.files, reading.sha256
    options = tuple(root.options)
    looked = reading.looked_in
    if reading.problems:
        return ParsedConfig(path, options, (), files, sha256, reading.problems, looked_in=looked)
    tree, problems = grammar.build(root, dialect, limits)
    if tree is None:
        return ParsedConfig(path, options, (), files, sha256, problems, looked_in=looked)
    flat = render.render(tree)
    return ParsedConfig(path, options, target_specs(tree), files, sha256, (), flat, tree, looked)


def target_specs(tree: ConfigTree) -> tuple[TargetSpec, ...]:
    """Each target's name, LUN count, paths and digest (of what is rendered for it)."""
    shared = hashlib.sha256(render.render_globals(tree).encode())
    specs = []
    for target in tree.targets:
        digest = shared.copy()
        digest.update(render.render_target(target).encode())
        paths = tuple(lun.path for lun in target.luns)
        specs.append(TargetSpec(target.name, len(target.luns), digest.hexdigest(), paths))
    return tuple(specs)
