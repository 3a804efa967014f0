"""Property-based fuzzing of issue 24's boundaries: images, manifests and every CLI text argument.

- images: arbitrary bytes, and PNG headers with hostile dimensions, bit depths and colour types, through
  ``registry.core.images.decode`` (the one bounded decoder): the result is a ``ManifestError`` naming the
  problem or an image within ``MAX_PIXELS``, never another exception;
- manifests: Parquet tables with missing, extra and retyped columns, duplicate sample ids, nulls and hostile
  strings, through the checks validate, release and verify use (``manifest.read_table``,
  ``names.check_table``, ``manifest.connect`` + ``missing_columns`` + ``names.check_manifest``): a
  ``SynthregError`` subclass or a table whose names and digests are safe, never a traceback;
- the CLI: every text argument (actor, reason, names, versions, refs, scopes, paths) of every command,
  found by introspecting the typer app, with a hostile value while the others are plausible, on a small
  released workspace (tests/registry/conftest.py ``released``, cloned once per module): never the
  internal-error exit (70), never a Python traceback, and no line of output forged by a newline, carriage
  return or escape sequence from the input (no output line starts with the injected marker), in the
  command's own output or in ``log``, ``list`` and ``show`` after it.

Commands that would run a model when their arguments are valid (generate, train, reproduce) are given a
recipe, settings or manifest that does not exist, so they stop before any model runs: their text arguments
are checked up to that point only. The default run is bounded (a few examples per target, derandomized);
the ``slow`` variants run more.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import ManifestError, SynthregError
from registry.core.images import MAX_PIXELS, PNG_SIGNATURE, decode
from registry.core.names import check_manifest, check_table, sample_id_problem
from registry.store import manifest as mf
from tests.conftest import TrustSetup
from tests.registry.conftest import CANDIDATES, Built, base, released  # noqa: F401

runner = CliRunner()
FAST, SLOW = 8, 150
MARK = "FORGED"


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


# --- images --------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes, good_crc: bool = True) -> bytes:
    crc = zlib.crc32(kind + data) if good_crc else 0xDEADBEEF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


DIMENSIONS = st.one_of(
    st.integers(0, 64),
    st.sampled_from([0, 1, 4096, 4097, 30000, 65535, 2**31 - 1, 2**31, 2**32 - 1]),
)


@st.composite
def hostile_pngs(draw: st.DrawFn) -> bytes:
    """A PNG signature and IHDR with drawn dimensions, depth and colour type, then IDAT data that is
    random, compressed random, or compressed zeros (a small bomb), maybe cut short."""
    width, height = draw(DIMENSIONS), draw(DIMENSIONS)
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255]))
    colour = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 7]))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, draw(st.sampled_from([0, 1, 2])))
    body = draw(
        st.one_of(
            st.binary(max_size=256),
            st.binary(max_size=256).map(zlib.compress),
            st.integers(0, 1 << 20).map(lambda n: zlib.compress(bytes(n))),
        )
    )
    data = (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr, draw(st.booleans()))
        + (_chunk(b"PLTE", bytes(range(6))) if colour == 3 else b"")
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@st.composite
def real_pngs(draw: st.DrawFn) -> bytes:
    """A real PNG (PIL-written), so the property is not only ever checked on refusals."""
    from PIL import Image

    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16"]))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def _decoded_or_named(data: bytes, png: bool = True) -> Any:
    try:
        im = decode(data, "fuzz.png", mode=None, png=png)
    except ManifestError as e:
        assert str(e).startswith("fuzz.png: "), e
        return None
    assert im.size[0] * im.size[1] <= MAX_PIXELS, im.size
    return im


@pytest.mark.parametrize("n", _sizes())
def test_fuzz_image_decoder(n: int) -> None:
    decoded = []

    @_runs(n * 8)
    @given(st.one_of(st.binary(max_size=512), hostile_pngs(), real_pngs()), st.booleans())
    def prop(data: bytes, png: bool) -> None:
        if _decoded_or_named(data, png) is not None:
            decoded.append(1)

    prop()
    assert decoded, "no example decoded: the property only ever saw refusals"


def test_the_decoder_refuses_a_bomb_header_before_reading_pixels() -> None:
    """A 30000x30000 header is refused by its IHDR, named with its size (not decoded first)."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    data = PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(1000)))
    with pytest.raises(ManifestError, match=r"^bomb\.png: the image is 30000x30000 pixels, over"):
        decode(data, "bomb.png")


# --- manifests -----------------------------------------------------------------------------------------

HOSTILE_TEXT = ["", "..", "../../evil", "/etc/passwd", "a\nb", "a\x00b", "\u202egnp.exe", "x" * 3000, "a b"]


@pytest.fixture(scope="module")
def manifest(base: Built) -> pa.Table:  # noqa: F811
    return mf.read_table(base.ws / CANDIDATES / "manifest.parquet")


@st.composite
def manifests(draw: st.DrawFn, table: pa.Table) -> pa.Table:
    rows = [dict(r) for r in table.slice(0, 6).to_pylist()]
    kind = draw(st.sampled_from(["value", "value", "null", "drop", "extra", "retype", "duplicate", "empty"]))
    names = table.column_names
    if kind == "empty":
        return table.slice(0, 0)
    if kind == "drop":
        return table.drop_columns(draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)))
    if kind == "extra":
        return table.append_column(
            draw(st.sampled_from(["extra", "sample_id_2", ""])), pa.array(range(len(table)))
        )
    if kind == "retype":
        col = draw(st.sampled_from(names))
        values = draw(
            st.sampled_from(
                [pa.array(range(len(table))), pa.array([1.5] * len(table)), pa.array([b"x"] * len(table))]
            )
        )
        return table.set_column(names.index(col), col, values)
    i = draw(st.integers(0, len(rows) - 1))
    if kind == "duplicate":
        rows.append(dict(rows[i]))
        return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in table.schema]))
    col = draw(
        st.sampled_from(
            ["sample_id", "member", "shard", "image_sha256", "phash", "prompt", "identity", *names]
        )
    )
    field = table.schema.field(col)
    if kind == "null" or not pa.types.is_string(field.type):
        rows[i][col] = None
    else:
        rows[i][col] = draw(st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20)))
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in table.schema]))


@pytest.mark.parametrize("n", _sizes())
def test_fuzz_manifest_checks(manifest: pa.Table, n: int, tmp_path: Path) -> None:
    path = tmp_path / "manifest.parquet"
    accepted = []

    @_runs(n * 4)
    @given(manifests(manifest))
    def prop(t: pa.Table) -> None:
        pq.write_table(t, path)
        try:
            table = mf.read_table(path)
            check_table(table, "fuzzed manifest")
            con = mf.connect(path)
            try:
                if mf.missing_columns(con):
                    return
                check_manifest(con, "fuzzed manifest")
            finally:
                con.close()
        except SynthregError as e:
            assert "Traceback" not in str(e) and str(e), e
            return
        accepted.append(1)
        for r in table.select(["sample_id", "image_sha256"]).to_pylist():  # accepted: its names are safe
            assert r["sample_id"] is not None and sample_id_problem(r["sample_id"]) is None, r
            assert re.fullmatch(r"[0-9a-f]{64}", r["image_sha256"] or ""), r

    prop()
    assert accepted, "no example was accepted: the property only ever saw refusals"


def test_the_manifest_checks_refuse_a_file_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "manifest.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match=r"is not a readable Parquet file"):
        mf.read_table(path)
    with pytest.raises(ManifestError, match=r"is not a readable Parquet file"):
        mf.connect(path)


# --- every CLI text argument ---------------------------------------------------------------------------

CLI_HOSTILE = [
    "",
    " ",
    "..",
    "../outside/x",
    f"a\n{MARK}",
    f"a\r{MARK}",
    f"a\r\n{MARK}: ok",
    f"x\x1b[2K\r{MARK}",
    f"\u2028{MARK}",
    f"digits@1.0.0\n{MARK}",
    "digits@",
    "digits@../../x",
    "<img src=x onerror=alert(1)>",
    "{0}%s{identity}",
    "\u202egnp.exe",
    "x" * 400,
    "a\x00b",
    "-x",
]
SKIPPED = {"--workspace", "--json"}
# Plausible values for every argument a command needs, so a hostile value in one reaches the code that
# reads it. generate, train and reproduce get a file that does not exist, so no model ever runs here.
PLAUSIBLE = {
    "init": {"name": "fuzzds", "--prompt": "a photo of {identity}", "--identity": "a"},
    "generate": {"recipe": "missing/recipe.yaml", "--out": "fz/gen"},
    "filter": {"candidates": "data/digits/candidates", "--out": "fz/filtered"},
    "reproduce": {"sample_id": "nosuchsample", "--manifest": "missing/manifest.parquet"},
    "validate": {"filtered": "data/digits/filtered", "--out": "fz/policy"},
    "train": {"settings": "missing/train.yaml", "--dataset": "digits@1.0.0"},
    "keygen": {"--name": "Fuzz Tester"},
    "release": {"name": "digits", "--version": "9.9.9", "--actor": "Fuzz Tester"},
    "derive": {"ref": "digits@1.0.0", "--version": "1.0.1", "--reason": "fuzz", "--actor": "Fuzz Tester"},
    "verify": {"ref": "digits@1.0.0"},
    "show": {"ref": "digits@1.0.0"},
    "diff": {"a": "digits@1.0.0", "b": "digits@1.0.0"},
    "impact": {"--generator": "tiny-digits"},
    "withdraw": {"ref": "digits@1.0.0", "--reason": "fuzz", "--actor": "Fuzz Tester"},
    "report": {"ref": "digits@1.0.0", "--out": "fz/report.html"},
    "catalog": {"--out": "fz/catalog"},
    "pull": {"ref": "digits@1.0.0"},
    "approve": {"ref": "digits@1.0.0"},
    "waive": {
        "rule_id": "quality.accepted-share",
        "--scope": "digits",
        "--reason": "fuzz",
        "--expires": "2099-12-31",
    },
    "trace run": {"run_id": "0" * 32},
    "trace model": {"ref": "nomodel/1"},
    "trace image": {"file": "missing.png"},
    "trust add": {"--from": "missing.pub", "--role": "approver"},
    "trust remove": {"who": "nobody"},
    "trust revoke": {"who": "nobody", "--reason": "fuzz"},
    "trust set-threshold": {"role": "approver", "n": "1"},
    "trust sign": {"proposal": "missing.json"},
    "trust export": {"out": "fz/trust.yaml"},
    "trust update": {"--from": "missing.yaml"},
}


def _commands() -> dict[str, tuple[Any, list[tuple[str, Any]]]]:
    """{"trace run": (its click command, [(param key, param)])}: every command and its text parameters
    (arguments and options that take a value; flags, --json and --workspace left out)."""
    out: dict[str, tuple[Any, list[tuple[str, Any]]]] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        params = []
        for p in cmd.params:
            key = p.opts[0] if p.param_type_name == "option" else p.name
            if p.param_type_name == "option" and (getattr(p, "is_flag", False) or key in SKIPPED):
                continue
            if key != "--help":
                params.append((key, p))
        out[" ".join(path)] = (cmd, params)

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()


def _argv(command: str, params: list[tuple[str, Any]], values: dict[str, str]) -> list[str]:
    argv = command.split()
    for key, p in params:  # arguments in order
        if p.param_type_name == "argument" and key in values:
            argv.append(values[key])
    for key, p in params:
        if p.param_type_name == "option" and key in values:
            argv += [key, values[key]]
    return argv


def _forged(output: str) -> list[str]:
    """Output lines that begin with the injected marker: a line the input made."""
    return [
        line
        for line in re.split(r"[\n\r\u2028\u2029\x1b]", output)
        if line.lstrip(" [0-9;KmJH").startswith(MARK)
    ]


@pytest.fixture(scope="module")
def cli_ws(
    released: Built,  # noqa: F811
    solo_trust: TrustSetup,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:
    """A clone of ``released``; its own MLflow store, crash folder and copy of the trust root, so no
    command here changes what other tests read."""
    from tests.registry.conftest import clone

    top = tmp_path_factory.mktemp("cli-fuzz")
    (top / "outside").mkdir()
    trust = top / "trust" / "trust.yaml"
    shutil.copytree(solo_trust.trust.parent, trust.parent)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYNTHREG_CRASH_DIR", str(top / "crashes"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{top}/mlflow.db")
        mp.setenv("SYNTHREG_TRUST", str(trust.parent / solo_trust.trust.name))
        ws = clone(released.ws, top / "ws")
        mp.chdir(ws)  # relative paths (keygen's key, schema's out) land in the workspace's folder
        yield ws


def _check(ws: Path, argv: list[str]) -> Any:
    result = runner.invoke(app, [*argv, "-w", str(ws)])
    shown = f"{argv!r} -> {result.exit_code}:\n{result.output}"
    assert result.exit_code != 70 and "internal error" not in result.output, shown
    assert "Traceback (most recent call last)" not in result.output, shown
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{shown}\nraised {result.exception!r}")
    assert not _forged(result.output), f"{shown}\nforged lines: {_forged(result.output)}"
    return result


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_fuzz_every_cli_text_argument(cli_ws: Path, command: str) -> None:
    _, params = COMMANDS[command]
    if not params:
        pytest.skip(f"`synthreg {command}` takes no text argument")
    plausible = dict(PLAUSIBLE.get(command, {}))
    required = [k for k, p in params if p.required and k not in plausible]
    assert not required, f"PLAUSIBLE lacks a value for {command} {required}"

    @_runs(max(FAST, 2 * len(params)))
    @given(st.sampled_from([k for k, _ in params]), st.sampled_from(CLI_HOSTILE))
    def prop(key: str, value: str) -> None:
        result = _check(cli_ws, _argv(command, params, {**plausible, key: value}))
        if result.exit_code == 0:  # it was accepted: what it wrote must not forge a line where it is read
            for after in (["log"], ["list"], ["show", "digits@1.0.0"]):
                _check(cli_ws, after)

    prop()


def test_the_forged_line_check_would_catch_a_forged_line() -> None:
    """The property is not vacuous: a newline from input that starts a line is seen; an escaped one is
    not."""
    assert _forged(f"withdrawn by a\n{MARK}: all clear")
    assert _forged(f"x\r{MARK}")
    assert not _forged(f"withdrawn by 'a\\n{MARK}'")
    assert os.sep == "/"
