"""Property-based fuzzing of every file synthreg reads (issue 14, item 6): recipes, policy packs, waiver
files, params, manifests (Parquet with hostile values) and shards (tar bytes).

For any input, the command (the real CLI, in process) either succeeds or exits with a clear ``error:`` line
and a known exit code (1 input error, 2 usage, 3 policy failed), never the internal-error exit (70); it
never writes outside the workspace (a sentinel folder beside it must stay as it was) and never leaves a
half-written file (no ``*.tmp`` anywhere). Inputs start from the real ones of a generated, filtered and
validated workspace (tests/registry/conftest.py ``base``) and are mutated with hostile values.

The default run is bounded (a few examples per target, derandomized, so it is the same every time); the
``slow`` variants run many more.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from registry.cli import app
from registry.store import manifest as mf
from registry.store.shards import tar_bytes
from tests.registry.conftest import CANDIDATES, FILTERED, RECIPE, Built, base, clone  # noqa: F401

runner = CliRunner()
KNOWN_EXITS = {0, 1, 2, 3}
FAST, SLOW = 6, 120
HOSTILE = [
    "",
    " ",
    "..",
    "../../evil",
    "../sentinel/evil",
    "/etc/passwd",
    "/tmp/evil.png",
    "a\nb",
    "a\x00b",
    "a\rb",
    "\u202egnp.exe",
    "{identity}{",
    "{0}",
    "%s%n",
    "&a",
    "*a",
    "9" * 40,
    "x" * 5000,
    "digits-1-000000-00000000",
    "cuda:7",
    "policies/packs/default.yaml",
    "releases/digits",
]
strings = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=30))
scalars = st.one_of(
    strings,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(strings, inner, max_size=3)),
    max_leaves=6,
)


def _runs(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def _sizes() -> list:
    return [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="long", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def ws(base: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:  # noqa: F811
    """A clone of ``base`` with a sentinel folder beside it that no command may touch."""
    top = tmp_path_factory.mktemp("fuzz")
    sentinel = top / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched\n")
    with pytest.MonkeyPatch.context() as mp:  # a crash report, if any, goes beside the test, not to ~
        mp.setenv("SYNTHREG_CRASH_DIR", str(tmp_path_factory.mktemp("crashes")))
        yield clone(base.ws, top / "ws")


def _outside(ws: Path) -> dict[str, str]:
    """Everything beside the workspace, by path and content digest."""
    return {
        p.relative_to(ws.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(ws.parent.rglob("*"))
        if not p.is_relative_to(ws)
    }


def invoke(ws: Path, *args: str) -> Any:
    """Run the CLI and check the properties every command must keep."""
    before = _outside(ws)
    result = runner.invoke(app, [*args, "-w", str(ws)])
    assert result.exit_code in KNOWN_EXITS, (args, result.exit_code, result.output, result.exception)
    assert "internal error" not in result.output and "Traceback" not in result.output, result.output
    if result.exit_code == 1:
        assert result.output.startswith("error: "), result.output
    assert _outside(ws) == before, f"{args} wrote outside the workspace"
    leftovers = [p for p in ws.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]
    assert not leftovers, f"{args} left half-written files: {leftovers}"
    return result


def _mutated(original: dict, draw: st.DrawFn, keys: list[str]) -> dict:
    """``original`` with one key (maybe nested one level, maybe new) set to a drawn value."""
    data = yaml.safe_load(yaml.safe_dump(original))
    key = draw(st.one_of(st.sampled_from(keys), strings))
    target = data
    if isinstance(data.get(key), dict) and draw(st.booleans()):
        target = data[key]
        key = draw(st.one_of(st.sampled_from(sorted(target) or ["x"]), strings))
    target[key] = draw(values)
    return data


@st.composite
def yaml_texts(draw: st.DrawFn, original: dict) -> bytes:
    """A YAML file: the original with one hostile change, raw text, or raw bytes."""
    kind = draw(st.sampled_from(["mutated", "mutated", "text", "bytes"]))
    if kind == "mutated":
        return yaml.safe_dump(_mutated(original, draw, sorted(original)), allow_unicode=True).encode()
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    return draw(st.binary(max_size=200))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.parametrize("n", _sizes())
def test_fuzz_recipes(ws: Path, n: int):
    original = yaml.safe_load((ws / RECIPE).read_text())

    @_runs(n)
    @given(yaml_texts(original))
    def prop(data: bytes) -> None:
        _write(ws / "fz" / "recipe.yaml", data)
        invoke(ws, "validate", FILTERED, "--recipe", "fz/recipe.yaml", "--out", "fz/policy")

    prop()


@pytest.mark.parametrize("n", _sizes())
def test_fuzz_policy_packs(ws: Path, n: int):
    original = yaml.safe_load((ws / "policies/packs/default.yaml").read_text())
    original["rules"] = original["rules"][:4]  # the prompt and licence rules: quick to evaluate

    @st.composite
    def packs(draw: st.DrawFn) -> bytes:
        if draw(st.booleans()):
            return draw(yaml_texts(original))
        data = yaml.safe_load(yaml.safe_dump(original))
        i = draw(st.integers(0, len(data["rules"]) - 1))
        data["rules"][i] = _mutated(data["rules"][i], draw, sorted(data["rules"][i]))
        return yaml.safe_dump(data, allow_unicode=True).encode()

    @_runs(n)
    @given(packs())
    def prop(data: bytes) -> None:
        _write(ws / "fz" / "pack.yaml", data)
        invoke(ws, "validate", FILTERED, "--recipe", RECIPE, "--pack", "fz/pack.yaml", "--out", "fz/policy")

    prop()


@pytest.mark.parametrize("n", _sizes())
def test_fuzz_waivers_and_params(ws: Path, n: int):
    params = yaml.safe_load((ws / "params.yaml").read_text())
    # A legacy unsigned waivers file (validate lists its entries as ignored: only signed waivers count).
    waivers = {
        "waivers": [
            {
                "rule_id": "bias.requested-balance",
                "scope": "digits",
                "reason": "too few images",
                "approver": "qa@example.org",
                "expires": "2099-12-31",
            }
        ]
    }

    @st.composite
    def inputs(draw: st.DrawFn) -> tuple[bytes, bytes]:
        p = yaml.safe_load(yaml.safe_dump(params))
        p["datasets"]["digits"]["validate"]["waivers"] = "fz/waivers.yaml"
        if draw(st.booleans()):
            return yaml.safe_dump(p).encode(), draw(yaml_texts(waivers))
        return draw(yaml_texts(p)), yaml.safe_dump(waivers).encode()

    @_runs(n)
    @given(inputs())
    def prop(files: tuple[bytes, bytes]) -> None:
        _write(ws / "fz" / "params.yaml", files[0])
        _write(ws / "fz" / "waivers.yaml", files[1])
        invoke(ws, "validate", FILTERED, "--params", "fz/params.yaml", "--out", "fz/policy")

    prop()


NULLABLE = pa.schema([f.with_nullable(True) for f in mf.SCHEMA])  # as any Parquet writer may write
COLUMNS = ["sample_id", "member", "shard", "image_sha256", "identity", "prompt", "phash", "weights_digest"]


@pytest.mark.parametrize("n", _sizes())
def test_fuzz_manifests(ws: Path, n: int):
    table = mf.read_table(ws / CANDIDATES / "manifest.parquet")

    @st.composite
    def manifests(draw: st.DrawFn) -> pa.Table:
        rows = table.to_pylist()
        kind = draw(st.sampled_from(["value", "value", "value", "drop-column", "retype", "empty"]))
        if kind == "empty":
            return table.slice(0, 0)
        if kind == "drop-column":
            return table.drop_columns([draw(st.sampled_from(table.column_names))])
        if kind == "retype":
            col = draw(st.sampled_from(COLUMNS))
            return table.set_column(table.column_names.index(col), col, pa.array(range(len(rows))))
        row = rows[draw(st.integers(0, len(rows) - 1))]
        col = draw(st.sampled_from(COLUMNS))
        row[col] = draw(st.one_of(st.sampled_from(HOSTILE), st.none(), st.text(max_size=20)))
        if col == "sample_id" and draw(st.booleans()):
            row["member"] = f"{row['sample_id']}.png"
        return pa.Table.from_pylist(rows, schema=NULLABLE)

    @_runs(n)
    @given(manifests())
    def prop(t: pa.Table) -> None:
        out = ws / "fz" / "cands" / "manifest.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        import pyarrow.parquet as pq

        pq.write_table(t, out)
        if invoke(ws, "filter", "fz/cands", "--out", "fz/filtered").exit_code == 0:
            invoke(ws, "validate", "fz/filtered", "--recipe", RECIPE, "--out", "fz/policy")

    prop()


@pytest.mark.parametrize("n", _sizes())
def test_fuzz_shards(ws: Path, n: int):
    """The first shard replaced by hostile tar bytes; its manifest rows point at the copy."""
    table = mf.read_table(ws / CANDIDATES / "manifest.parquet")
    shard = table["shard"][0].as_py()
    copy = "fz/shards/shard-00000.tar"
    rows = table.to_pylist()
    for r in rows:
        r["shard"] = copy if r["shard"] == shard else r["shard"]
    original = (ws / shard).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(original)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]

    @st.composite
    def shards(draw: st.DrawFn) -> tuple[bytes, list[dict]]:
        kind = draw(st.sampled_from(["bytes", "truncate", "rename", "garbage-image", "link"]))
        fixed = [dict(r) for r in rows]
        if kind == "bytes":
            return draw(st.binary(max_size=2048)), fixed
        if kind == "truncate":
            return original[: draw(st.integers(0, len(original)))], fixed
        if kind == "rename":
            i = draw(st.integers(0, len(members) - 1))
            name = draw(st.sampled_from(HOSTILE).filter(bool))
            return tar_bytes([(name if k == i else m, b) for k, (m, b) in enumerate(members)]), fixed
        if kind == "garbage-image":  # an insider also fixes the digest: the bytes are not a PNG
            junk = draw(st.binary(min_size=1, max_size=64))
            first = members[0][0]
            for r in fixed:
                if r["member"] == first and r["shard"] == copy:
                    r["image_sha256"] = hashlib.sha256(junk).hexdigest()
            return tar_bytes([(first, junk), *members[1:]]), fixed
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            link = tarfile.TarInfo(members[0][0])
            link.type, link.linkname = tarfile.SYMTYPE, draw(st.sampled_from(["/etc/passwd", "../../x"]))
            tar.addfile(link)
            for m, b in members[1:]:
                info = tarfile.TarInfo(m)
                info.size = len(b)
                tar.addfile(info, io.BytesIO(b))
        return buf.getvalue(), fixed

    @_runs(n)
    @given(shards())
    def prop(case: tuple[bytes, list[dict]]) -> None:
        data, fixed = case
        _write(ws / copy, data)
        mf.write_table(
            pa.Table.from_pylist(fixed, schema=mf.SCHEMA), ws / "fz" / "cands" / "manifest.parquet"
        )
        invoke(ws, "filter", "fz/cands", "--out", "fz/filtered")

    prop()


def test_the_sentinel_check_would_catch_a_write_outside(ws: Path):
    """The property is not vacuous: a write beside the workspace is seen."""
    before = _outside(ws)
    stray = ws.parent / "sentinel" / "stray.txt"
    stray.write_text("x")
    try:
        assert _outside(ws) != before
    finally:
        stray.unlink()
    shutil.rmtree(ws / "fz", ignore_errors=True)
