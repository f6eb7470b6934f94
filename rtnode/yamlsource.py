"""YAML that remembers where each key was written.

Config and rules errors must name the file and the line a person has to fix; PyYAML's composed node
tree has the marks, so we read it once and keep a map from key path to line next to the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


@dataclass
class YamlSource:
    """Parsed YAML plus the 1-based line of every mapping key and sequence item."""

    data: Any
    path: Path | None = None
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key: KeyPath) -> int | None:
        """The line of key, or of its closest written ancestor (a missing key has no line)."""
        for n in range(len(key), 0, -1):
            if key[:n] in self.lines:
                return self.lines[key[:n]]
        return None

    def where(self, key: KeyPath) -> str:
        """'file:line' (or just 'file') for messages."""
        name = str(self.path) if self.path else "<defaults>"
        line = self.line_of(key)
        return f"{name}:{line}" if line else name


class YamlError(ValueError):
    """A file that is not valid YAML; the message names file and line."""


def _walk(node: yaml.Node, prefix: KeyPath, lines: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (key_node.value,)
            lines[prefix + key] = key_node.start_mark.line + 1
            _walk(value_node, prefix + key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[prefix + (i,)] = item.start_mark.line + 1
            _walk(item, prefix + (i,), lines)


def load_yaml(path: Path) -> YamlSource:
    """Read a YAML file; an empty file is an empty mapping."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"{where}: not valid YAML: {problem}") from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return YamlSource(data=data if data is not None else {}, path=Path(path), lines=lines)
