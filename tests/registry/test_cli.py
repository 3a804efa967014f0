import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from registry.cli import app
from tests.conftest import REPO, small_recipe, write_yaml

runner = CliRunner()


def test_help_imports_no_heavy_library():
    """`synthreg --help` must start fast: torch, diffusers, sklearn, MLflow, GX, c2pa and OpenLineage load
    in commands."""
    code = (
        "import sys\nfrom registry.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'sklearn', 'mlflow', 'great_expectations', "
        "'transformers', 'pyarrow', 'duckdb', 'c2pa', 'openlineage') if m in sys.modules)\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_malformed_recipe_is_one_clear_error_and_exit_1(workspace: Path):
    write_yaml(workspace / "recipe.yaml", small_recipe(colour="red"))
    result = runner.invoke(app, ["generate", "recipe.yaml", "-w", str(workspace)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"error: recipe {workspace / 'recipe.yaml'} is invalid:"
    assert "  colour: unknown key (check its spelling; see the JSON schema in schemas/)" in lines
    assert "Traceback" not in result.output
    assert not (workspace / "data").exists()


def test_unknown_identity_and_escaping_output(workspace: Path):
    write_yaml(workspace / "recipe.yaml", small_recipe(identities=["1", "x"]))
    result = runner.invoke(app, ["generate", "recipe.yaml", "-w", str(workspace)])
    assert result.exit_code == 1
    assert result.output.startswith("error: identity 'x' is not known to generator tiny-digits")
    result = runner.invoke(app, ["generate", "recipe.yaml", "--out", "../out", "-w", str(workspace)])
    assert result.exit_code == 1
    assert result.output.startswith("error: output folder ../out escapes the workspace")


def test_generate_then_filter_through_the_cli(workspace: Path):
    write_yaml(workspace / "params.yaml", {"generate": {"batch_size": 6, "shard_size": 12}})
    result = runner.invoke(
        app, ["generate", "recipe.yaml", "--out", "data/d/candidates", "-w", str(workspace)]
    )
    assert result.exit_code == 0, result.output
    assert "12 images in 1 shard(s) (12 generated" in result.output
    result = runner.invoke(app, ["filter", "data/d/candidates", "-w", str(workspace)])
    assert result.exit_code == 0, result.output
    assert "/12 accepted; manifest" in result.output
    assert (workspace / "data/d/filtered/manifest.parquet").is_file()


def test_missing_candidates_for_filter(workspace: Path):
    result = runner.invoke(app, ["filter", "data/none", "-w", str(workspace)])
    assert result.exit_code == 1
    assert (
        result.output.startswith("error: manifest ")
        and "does not exist; run `synthreg generate`" in result.output
    )


def test_every_help_text_is_as_before_the_move():
    """Issue 18 moved every command into topic modules and an ordered command table: what a user reads
    in `synthreg --help` and each command's --help must not change (scripts/help_snapshot.py; a
    deliberate change rewrites the snapshot with `python scripts/help_snapshot.py write ...`)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from help_snapshot import snapshot

    folder = REPO / "tests" / "registry" / "fixtures" / "help"
    kept = {p.name: p.read_text() for p in folder.glob("*.txt")}
    found = snapshot()
    assert sorted(found) == sorted(kept)
    assert [n for n in sorted(found) if found[n] != kept[n]] == []
