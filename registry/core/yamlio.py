"""Reading YAML with bounds, so a hostile recipe, pack or waiver file fails fast with a message.

PyYAML's ``safe_load`` shares the object behind an alias, so a "billion laughs" file loads quickly, but
whatever walks the result next (pydantic, json.dumps) expands every alias: measured on main, an alias
bomb in a recipe ran for over a minute and died with MemoryError. Here a file is refused when

- it is larger than ``MAX_BYTES`` (4 MiB; the largest YAML synthreg ships, the licence base, is 20 KiB),
- it is not UTF-8 text,
- it holds more than ``MAX_ALIASES`` aliases (``*name``; 100),
- its nodes, counted with every alias expanded, exceed ``MAX_NODES`` (100,000), or an alias refers to
  a node that contains it (a cycle), or it nests deeper than ``MAX_DEPTH`` (64).

Error messages name the file, the line and the column, never the file's text: PyYAML's own messages
quote the offending line, which for a file given by mistake (a password file, say) would print it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from registry.core.errors import ConfigError, SynthregError

MAX_BYTES = 4 << 20
MAX_ALIASES = 100
MAX_NODES = 100_000
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Bounded(f"more than {MAX_ALIASES} aliases (line {mark.line + 1})")
        return super().compose_node(parent, index)


class _Bounded(Exception):
    pass


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in ``root`` with every alias expanded; _Bounded past MAX_NODES, on a cycle or deep nesting."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise _Bounded(f"an alias that contains itself (line {node.start_mark.line + 1})")
        if depth > MAX_DEPTH:
            raise _Bounded(f"nesting deeper than {MAX_DEPTH} levels (line {node.start_mark.line + 1})")
        total = 1
        if isinstance(node, yaml.SequenceNode | yaml.MappingNode):
            on_path.add(key)
            children = (
                node.value if isinstance(node, yaml.SequenceNode) else [c for kv in node.value for c in kv]
            )
            for child in children:
                total += size(child, depth + 1)
                if total > MAX_NODES:
                    raise _Bounded(f"more than {MAX_NODES:,} values once aliases are expanded")
            on_path.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


def _where(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.reader.ReaderError):  # names the position and the character's code only
        return str(e).splitlines()[0] + f" (character {e.position})"
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or type(e).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)


def loads(text: str, source: str, error: type[SynthregError] = ConfigError) -> Any:
    """The YAML document in ``text``, bounded as the module says; ``error`` names ``source``."""
    loader = None
    try:
        loader = _Loader(text)  # checks the characters first: a ReaderError names their position
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _Bounded as e:
        raise error(
            f"{source} is refused: {e}; YAML inputs are bounded (see registry/core/yamlio.py)"
        ) from None
    except yaml.YAMLError as e:
        raise error(f"{source} is not valid YAML: {_where(e)}") from None
    except (ValueError, TypeError, RecursionError) as e:  # e.g. an integer of 5,000 digits, a bad date
        raise error(f"{source} holds a value YAML cannot read ({type(e).__name__}); fix it") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: Path, what: str, error: type[SynthregError] = ConfigError) -> Any:
    """The YAML document in ``path`` (a ``what``, e.g. "recipe"), refused when over MAX_BYTES or not UTF-8."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror}); check the path") from None
    if len(raw) > MAX_BYTES:
        raise error(
            f"{what} {path} is over {MAX_BYTES >> 20} MiB; YAML inputs are bounded (registry/core/yamlio.py)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    return loads(text, f"{what} {path}", error)
