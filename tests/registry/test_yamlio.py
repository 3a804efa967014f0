"""Bounded YAML (issue 14, item 4): alias bombs, cycles, deep nesting, huge files and non-UTF-8 bytes fail
fast with one line naming the file, never its content; through the real CLI for a recipe and a pack."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.core import yamlio
from registry.core.errors import ConfigError
from tests.conftest import small_recipe, write_yaml

runner = CliRunner()


def bomb(levels: int = 9) -> str:
    """A "billion laughs": 8 levels of 9 aliases each (72 aliases, 9**9 values once expanded)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_recipe_fails_fast_through_the_cli(workspace: Path):
    (workspace / "recipe.yaml").write_text(bomb())
    start = time.perf_counter()
    result = runner.invoke(app, ["generate", "recipe.yaml", "-w", str(workspace)])
    assert time.perf_counter() - start < 5  # not a timing target: on main this ran for over a minute
    assert result.exit_code == 1
    assert result.output == (
        f"error: recipe {workspace / 'recipe.yaml'} is refused: more than 100,000 values once aliases are "
        "expanded; YAML inputs are bounded (see registry/core/yamlio.py)\n"
    )
    assert not (workspace / "data").exists()


def test_an_alias_bomb_pack_is_a_policy_error(tmp_path: Path):
    from policies.engine import load_pack

    pack = tmp_path / "pack.yaml"
    pack.write_text(bomb())
    with pytest.raises(Exception, match="more than 100,000 values once aliases are expanded"):
        load_pack(pack)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "is refused: an alias that contains itself (line 1)"),
        ("x: " + "[" * 80 + "]" * 80 + "\n", "is refused: nesting deeper than 64 levels (line 1)"),
        ("x: &a 1\ny: [" + ", ".join(["*a"] * 101) + "]\n", "is refused: more than 100 aliases (line 2)"),
        ("seed: 1" + "0" * 5000 + "\n", "holds a value YAML cannot read (ValueError); fix it"),
        ("a: b: c\n", "is not valid YAML: mapping values are not allowed here at line 1, column 5"),
        (
            "a: '\x00'\n",
            "is not valid YAML: unacceptable character #x0000: special characters are not allowed",
        ),
    ],
)
def test_bounded_yaml_refusals(text: str, message: str):
    with pytest.raises(ConfigError) as e:
        yamlio.loads(text, "recipe r.yaml")
    assert str(e.value).startswith(f"recipe r.yaml {message}"), str(e.value)


def test_a_big_or_binary_file_is_refused_without_echoing_it(tmp_path: Path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * yamlio.MAX_BYTES)
    with pytest.raises(ConfigError) as e:
        yamlio.load_file(big, "recipe")
    assert str(e.value) == f"recipe {big} is over 4 MiB; YAML inputs are bounded (registry/core/yamlio.py)"
    binary = tmp_path / "pack.yaml"
    binary.write_bytes(b"id: secret-token\n\xff")
    with pytest.raises(ConfigError) as e:
        yamlio.load_file(binary, "policy pack")
    assert str(e.value) == f"policy pack {binary} is not UTF-8 text (byte 17); save it as UTF-8"


def test_a_syntax_error_never_quotes_the_file(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text("password: hunter2\n  bad: [\n")
    with pytest.raises(ConfigError) as e:
        yamlio.load_file(path, "recipe")
    assert "hunter2" not in str(e.value) and str(e.value).startswith(f"recipe {path} is not valid YAML: ")


def test_ordinary_anchors_still_load(workspace: Path):
    text = "base: &b {steps: 8}\nother: *b\nlist: [1, 2]\n"
    assert yamlio.loads(text, "x") == {"base": {"steps": 8}, "other": {"steps": 8}, "list": [1, 2]}
    write_yaml(workspace / "recipe.yaml", small_recipe())
    assert yamlio.load_file(workspace / "recipe.yaml", "recipe")["dataset"] == "digits"
