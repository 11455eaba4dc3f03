"""The untyped tree a config reads into: blocks of options, each with its file and line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Option:
    key: str
    value: str | None  # None: the key alone on its line
    line: int
    path: Path


@dataclass
class Block:
    kind: str
    name: str | None
    line: int
    path: Path
    options: list[Option] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)


def merged(blocks: list[Block]) -> dict[str | None, Block]:
    """Blocks of one kind by name, duplicates merged in order (-MergeDuplicateBlocks)."""
    result: dict[str | None, Block] = {}
    for block in blocks:
        first = result.get(block.name)
        if first is None:
            result[block.name] = Block(
                block.kind,
                block.name,
                block.line,
                block.path,
                list(block.options),
                list(block.blocks),
            )
        else:
            first.options.extend(block.options)
            first.blocks.extend(block.blocks)
    return result
