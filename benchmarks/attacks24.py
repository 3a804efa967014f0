"""Issue 24's attack families, on attacks.py's workspaces, ``Attack`` and classifier: run through
``python benchmarks/attacks.py`` (``--family N``, ``--only TEXT``, ``-v``).

Every attempt is named after its family (``f1 ...`` to ``f10 ...``). Hostile attempts must be refused with
a clear ``error:`` line (exit 1) or a failing policy report (exit 3); ordinary ones, beside them, must
succeed, so a blanket refusal is counted too. Some attempts may end either way (``hostile=None``) and are
judged by what they leave (``Attack.check``): a forged line in the output, a row the filter accepted, a
half-made version `doctor` finds. The kills (family 9 and 10) run the CLI in a subprocess stopped by
synthreg's own crash hook (``$SYNTHREG_CRASH_AT``, registry.store.journal.crashpoint) at one step, then
check that `doctor --repair` leaves a workspace `doctor` finds clean and whose versions verify.

Sources: ``base`` (validated, not released), ``released`` (digits 1.0.0 final, solo trust root) and
``candidate`` (digits 1.0.0 released by Alice under a team root whose approvals are still missing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from attacks import CANDIDATES, FILTERED, POLICY, RECIPE, Attack, _symlink_out, fake_report, runner

from registry.cli import app
from registry.store import manifest as mf
from registry.store.shards import scan, tar_bytes
from registry.store.webdataset import add_sidecars

RELEASED = "releases/digits/1.0.0"
FORGED = "FORGED: digits@1.0.0 verified OK"  # a line no output may start with


def family(name: str) -> int:
    return int(name.split()[0][1:])


# --- the sources --------------------------------------------------------------------------------------


def _team(top: Path) -> Any:
    from tests.conftest import TrustSetup
    from tests.registry.test_trust import make_team

    solo = yaml.safe_load((top / "trust.yaml").read_text())["keys"][0]
    setup = TrustSetup(top / "key.pem", top / "trust.yaml", solo["keyid"], top / "pub")
    return make_team(top / "team", setup)


def build(top: Path, base: Path) -> dict[str, Path]:
    """``candidate``: a copy of ``base`` with digits 1.0.0 released by Alice under a team root (releaser
    Alice, approvers Bob and Carol, one approval missing), at ``top/team``."""
    from registry.releases.release import release
    from tests.registry.conftest import clone

    team = _team(top)
    candidate = clone(base, top / "candidate")
    saved = os.environ["SYNTHREG_TRUST"]
    os.environ["SYNTHREG_TRUST"] = str(team.trust)
    try:
        release("digits", "1.0.0", candidate, key=team.alice)
    finally:
        os.environ["SYNTHREG_TRUST"] = saved
    return {"candidate": candidate}


# --- helpers that plant things ------------------------------------------------------------------------


def _members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def _rows(ws: Path, where: str) -> list[dict]:
    return mf.read_table(ws / where / "manifest.parquet").to_pylist()


def _write_rows(ws: Path, where: str, rows: list[dict]) -> None:
    nullable = pa.schema([f.with_nullable(True) for f in mf.SCHEMA])  # as any Parquet writer may
    pq.write_table(pa.Table.from_pylist(rows, schema=nullable), ws / where / "manifest.parquet")


def replace_image(ws: Path, where: str, make: Callable[[bytes, list[dict]], bytes]) -> None:
    """Row 0's image becomes ``make(its png, the rows)``, its recorded sha256 updated to match (an
    insider's edit: the digests agree, only the bytes are hostile)."""
    rows = _rows(ws, where)
    shard = ws / rows[0]["shard"]
    members = _members(shard)
    old = dict(members)[rows[0]["member"]]
    new = make(old, rows)
    rows[0]["image_sha256"] = hashlib.sha256(new).hexdigest()
    shard.write_bytes(tar_bytes([(n, new if n == rows[0]["member"] else b) for n, b in members]))
    _write_rows(ws, where, rows)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    out, at = [], 8
    while at < len(png):
        (n,) = struct.unpack(">I", png[at : at + 4])
        out.append((png[at + 4 : at + 8], png[at + 8 : at + 8 + n]))
        at += 12 + n
    return out


def bomb(png: bytes, rows: list[dict]) -> bytes:
    """A 30000 x 30000 greyscale PNG carrying the original's marking: 900 MB of zeros once decoded,
    about 900 KB of zlib."""
    marking = [_chunk(k, b) for k, b in _chunks(png) if k in (b"iTXt", b"tEXt")]
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    line = b"\x00" * 30001
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(line) for _ in range(30000)) + z.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(marking)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def truncated(png: bytes, rows: list[dict]) -> bytes:
    return png[: len(png) * 2 // 3]


def not_png(png: bytes, rows: list[dict]) -> bytes:
    return b"GIF89a" + png[6:]


def replace_with_other(ws: Path, where: str) -> None:
    rows = _rows(ws, where)
    other = dict(_members(ws / rows[1]["shard"]))[rows[1]["member"]]
    replace_image(ws, where, lambda png, rows: other)


def duplicate_id(ws: Path, where: str) -> None:
    rows = _rows(ws, where)
    _write_rows(ws, where, [*rows, dict(rows[0])])


def unchecked_members(data: bytes, shard: str, expected: object, rows: object) -> dict | None:
    """Release's check of a shard's images switched off (``publish.checked_members``): its members by
    name, or None when it cannot be parsed. verify's own check, in ``shard_check``, still runs."""
    try:
        return scan(data)[0]
    except (tarfile.TarError, EOFError):
        return None


def sidecars_keeping_all(
    data: bytes, sidecars: dict[str, tuple[bytes, bytes]], found: dict[str, Any] | None = None
) -> bytes:
    """``add_sidecars``, keeping every member it would drop; a tar it cannot parse, as it is."""
    from registry.store.shards import members_from_bytes

    try:
        out = add_sidecars(data, sidecars)
    except tarfile.TarError:  # ShardFormatError: a header synthreg's strict parser refuses
        return data
    made = members_from_bytes(out)
    extra = [(n, bytes(b)) for n, b in members_from_bytes(data).items() if n not in made]
    return tar_bytes([*((n, bytes(b)) for n, b in made.items()), *extra]) if extra else out


def skipped_recheck(*a: Any, **k: Any) -> Any:
    """Release's policy re-check, skipped: an insider's build past it, for what comes after."""
    from policies.engine import Recheck

    return Recheck([], [], "skipped by an insider's build")


def sign_anyway(ws: Path, key: Path) -> None:
    """digits 1.0.0 released from ``ws``'s filtered data by a synthreg whose checks of names, members and
    images are switched off (what an insider's own build could sign); tagged as a real one."""
    from registry.releases.release import release

    fake_report(ws)
    original = ws.parent / "original-manifest.parquet"
    write_flat = mf.write_flat

    def flat(manifest: Path, out: Path, shards: Any) -> None:
        # A flat copy of the manifest as it was, where synthreg's own writer would not take the planted one.
        try:
            write_flat(manifest, out, shards)
        except (ValueError, pa.ArrowException):
            write_flat(original, out, shards)

    with (
        mock.patch("registry.releases.publish.check_manifest", lambda *a, **k: None),
        mock.patch("registry.releases.publish.checked_members", unchecked_members),
        mock.patch("registry.releases.release._recheck", skipped_recheck),
        mock.patch("registry.releases.publish.mf.write_flat", flat),
        mock.patch("registry.exports.report_html._thumbnail", lambda data: b""),
        mock.patch("registry.releases.publish.add_sidecars", sidecars_keeping_all),
    ):
        release("digits", "1.0.0", ws, key=key)


def release_args(key: Path) -> list[str]:
    return ["release", "digits", "--version", "1.0.0", "--key", str(key)]


def ustar_prefix(ws: Path, where: str) -> None:
    """Row 0's member header: ustar magic altered and the prefix field set to ``../escaped``, checksum
    fixed. Python's tarfile then reads one name and GNU tar another (issue 24)."""
    rows = _rows(ws, where)
    shard = ws / rows[0]["shard"]
    data = bytearray(tar_bytes([(n, b) for n, b in _members(shard)]))
    at = 0
    while data[at : at + 100].rstrip(b"\0").decode() != rows[0]["member"]:
        size = int(data[at + 124 : at + 136].rstrip(b"\0 ") or b"0", 8)
        at += 512 + (size + 511) // 512 * 512
    header = data[at : at + 512]
    header[257:263] = b"ustaX\0"
    header[345 : 345 + 10] = b"../escaped"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    data[at : at + 512] = header
    shard.write_bytes(bytes(data))


def unlisted_member(ws: Path, where: str) -> None:
    rows = _rows(ws, where)
    shard = ws / rows[0]["shard"]
    members = _members(shard)
    shard.write_bytes(tar_bytes([*members, ("digits-planted-0.png", members[0][1])]))


# --- checks run after the command ----------------------------------------------------------------------


def no_forged_line(ws: Path, result: Any) -> tuple[str, str] | None:
    for line in result.output.splitlines():
        if line.lstrip(" │").startswith("FORGED"):
            return "silent acceptance", f"forged line: {line[:120]!r}"
    return None


def cli(ws: Path, *args: str) -> Any:
    return runner.invoke(app, [*args, "-w", str(ws)])


def _git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True).stdout.strip()


def consistent(ws: Path, result: Any = None) -> tuple[str, str] | None:
    """`doctor` finds nothing unfinished; every version in releases/ verifies or is a candidate; a
    version's tag exists exactly when it is final; the git tree holds no uncommitted release file."""
    doc = cli(ws, "doctor")
    if doc.exit_code != 0:
        return "inconsistent state", f"doctor afterwards: {doc.output.strip().splitlines()[-1:]}"
    folder = ws / "releases" / "digits"
    for v in sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []:
        if v.startswith("."):
            return "inconsistent state", f"releases/digits/{v} left behind"
        out = cli(ws, "verify", f"digits@{v}")
        if out.exit_code not in (0, 6, 7):  # 6: a candidate, 7: withdrawn, whose content verifies
            return "inconsistent state", f"verify digits@{v} afterwards: {out.output.strip()[-160:]!r}"
        tagged = bool(_git(ws, "tag", "--list", f"digits@v{v}"))
        if tagged != (out.exit_code != 6):
            return "inconsistent state", f"digits@{v}: tagged {tagged}, verify exit {out.exit_code}"
    dirty = [line for line in _git(ws, "status", "--porcelain").splitlines() if "releases/" in line]
    if dirty:
        return "inconsistent state", f"uncommitted after the command: {dirty[:2]}"
    return None


def both(*checks: Callable[[Path, Any], tuple[str, str] | None]) -> Callable[[Path, Any], Any]:
    def check(ws: Path, result: Any) -> tuple[str, str] | None:
        return next((found for c in checks if (found := c(ws, result))), None)

    return check


def killed(ws: Path, args: list[str], at: str, env: dict[str, str] | None = None) -> None:
    """``synthreg ARGS`` in a subprocess, SIGKILLed by synthreg's own hook at step ``at``."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "synthreg"), *args, "-w", str(ws)],
        cwd=ws,
        env=os.environ | {"SYNTHREG_CRASH_AT": at} | (env or {}),
        capture_output=True,
        text=True,
        timeout=100,
    )
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"not killed at {at} (exit {proc.returncode}): {proc.stderr[-200:]}")


# --- the attempts -------------------------------------------------------------------------------------


def attacks(key: Path) -> list[tuple[Attack, str]]:
    """(attempt, the source it starts from), family by family."""
    top = key.parent
    team = top / "team"
    out: list[tuple[Attack, str]] = []

    def a(source: str, name: str, fn: Callable[[Path], list[str]], hostile: bool | None = True, **kw) -> None:
        out.append((Attack(name, fn, hostile, **kw), source))

    def linked(rel: str, args: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            _symlink_out(ws, rel)
            return args

        return fn

    waive = [
        "waive",
        "bias.requested-balance",
        "--scope",
        "digits",
        "--reason",
        "r",
        "--expires",
        "2099-01-01",
    ]
    withdraw = ["withdraw", "digits@1.0.0", "--reason", "consent withdrawn"]
    vargs = ["validate", FILTERED, "--out", POLICY]

    # 1. Symbolic links inside the workspace.
    a("released", f"f1 {RELEASED} symlinked out: verify", linked(RELEASED, ["verify", "digits@1.0.0"]))
    a(
        "released",
        f"f1 {RELEASED}/data symlinked out: verify",
        linked(f"{RELEASED}/data", ["verify", "digits@1.0.0"]),
    )
    a("released", f"f1 {RELEASED} symlinked out: withdraw", linked(RELEASED, withdraw))
    a("released", f"f1 {RELEASED} symlinked out: show", linked(RELEASED, ["show", "digits@1.0.0"]))
    a("base", "f1 keys/ symlinked out: release", linked("keys", release_args(key)), check=consistent)
    a("base", "f1 waivers/ symlinked out: waive", linked("waivers", [*waive, "--key", str(key)]))
    a("base", "f1 audit/ symlinked out: release", linked("audit", release_args(key)))

    a("base", "f1 waivers/ symlinked out: validate", linked("waivers", vargs))
    a(
        "base",
        "f1 keys/ symlinked out: keygen",
        linked(
            "keys",
            ["keygen", "--key", str(top / "eve.key"), "--name", "Eve", "--trust", str(top / "eve.yaml")],
        ),
    )

    def journal_linked(ws: Path) -> list[str]:  # the journal folder (.dvc/tmp/synthreg-journal) elsewhere
        (ws / ".dvc/tmp/synthreg-journal").mkdir(parents=True, exist_ok=True)
        _symlink_out(ws, ".dvc/tmp/synthreg-journal")
        return release_args(key)

    a("base", "f1 the journal folder symlinked out: release", journal_linked)

    def waiver_linked(ws: Path) -> list[str]:  # a signed waiver outside, linked in under its own name
        first = sorted((ws / "waivers").glob("*.dsse.json"))[0]
        target = ws.parent / "sentinel" / first.name
        shutil.move(first, target)
        first.symlink_to(target)
        return vargs

    a("base", "f1 a waiver file symlinked to a signed waiver outside: validate", waiver_linked)

    def loader_linked(ws: Path) -> list[str]:
        """The release loader over a data/ linked out (its verdict handed on as `loader` does below)."""
        from registry.core.errors import SynthregError
        from registry.releases.loader import open_release

        _symlink_out(ws, f"{RELEASED}/data")
        try:
            sum(1 for _ in open_release(ws, "digits@1.0.0"))
        except SynthregError as e:
            return ["show", f"loader refused: {str(e)[:100]}"]
        return ["show", "digits"]

    a("released", f"f1 {RELEASED}/data symlinked out: the loader", loader_linked)
    a("released", "f1 verify (ordinary)", lambda ws: ["verify", "digits@1.0.0"], hostile=False)

    # 2. Private keys inside the workspace.
    def key_inside(args: Callable[[Path, str], list[str]], src: Path = key) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            (ws / "keys").mkdir(exist_ok=True)
            shutil.copy(src, ws / "keys" / "release.key")
            return args(ws, "keys/release.key")

        return fn

    def in_workspace(ws: Path, rel: str) -> list[str]:
        os.chdir(ws)  # a relative --key, as a user types it in the workspace
        return release_args(Path(rel))

    def env_key_inside(args: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            (ws / "keys").mkdir(exist_ok=True)
            shutil.copy(key, ws / "keys" / "release.key")
            os.environ["SYNTHREG_SIGNING_KEY"] = str(ws / "keys" / "release.key")
            return args

        return fn

    def in_team(fn: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        def setup(ws: Path) -> list[str]:
            os.environ["SYNTHREG_TRUST"] = str(team / "team.yaml")
            return fn(ws)

        return setup

    a(
        "base",
        "f2 release --key keys/release.key (inside)",
        key_inside(in_workspace),
    )
    a(
        "base",
        "f2 $SYNTHREG_SIGNING_KEY inside: release",
        env_key_inside(release_args(key)[:-2]),
        check=consistent,
    )
    a("released", "f2 withdraw --key inside", key_inside(lambda ws, k: [*withdraw, "--key", str(ws / k)]))
    a("base", "f2 waive --key inside", key_inside(lambda ws, k: [*waive, "--key", str(ws / k)]))
    a(
        "candidate",
        "f2 approve --key bob.key inside",
        in_team(
            key_inside(lambda ws, k: ["approve", "digits@1.0.0", "--key", str(ws / k)], team / "Bob.pem")
        ),
        check=consistent,
    )
    a("base", "f2 keygen --key inside", lambda ws: ["keygen", "--key", str(ws / "keys" / "new.key")])
    a(
        "base",
        "f2 release --key outside (ordinary)",
        lambda ws: release_args(key),
        hostile=False,
        check=consistent,
    )
    a(
        "candidate",
        "f2 approve --key outside (ordinary)",
        in_team(lambda ws: ["approve", "digits@1.0.0", "--key", str(team / "Bob.pem")]),
        hostile=False,
        check=consistent,
    )

    # 3. Forged markings: row 0's image replaced by row 1's, whose marking names row 1's sample.
    def marking_filter(ws: Path) -> list[str]:
        replace_with_other(ws, CANDIDATES)
        return ["filter", CANDIDATES]

    def row0_rejected(ws: Path, result: Any) -> tuple[str, str] | None:
        if result.exit_code != 0:
            return None
        first = mf.read_table(ws / CANDIDATES / "manifest.parquet")["sample_id"][0].as_py()
        accepted = [r for r in _rows(ws, FILTERED) if r["sample_id"] == first and r["decision"] == "accepted"]
        return (
            ("silent acceptance", f"filter accepted {first} with another sample's image")
            if accepted
            else None
        )

    def marking_release(ws: Path) -> list[str]:
        replace_with_other(ws, FILTERED)
        fake_report(ws)
        return release_args(key)

    def marking_verify(ws: Path) -> list[str]:
        replace_with_other(ws, FILTERED)
        sign_anyway(ws, key)
        return ["verify", "digits@1.0.0"]

    a(
        "base",
        "f3 PNG marking names another sample: filter",
        marking_filter,
        hostile=None,
        check=row0_rejected,
    )
    a("base", "f3 PNG marking names another sample: release", marking_release, check=consistent)
    a("base", "f3 PNG marking names another sample: verify", marking_verify)
    a("base", "f3 filter (ordinary)", lambda ws: ["filter", CANDIDATES], hostile=False)

    # 4. Hostile images and manifests reaching release, validate, filter, verify and the loader.
    def image_at(where: str, make: Callable[[bytes, list[dict]], bytes], args: list[str]) -> Callable:
        def fn(ws: Path) -> list[str]:
            replace_image(ws, where, make)
            if where == FILTERED:
                fake_report(ws)
            return args

        return fn

    for label, make in (
        ("decompression bomb 30000x30000", bomb),
        ("truncated PNG", truncated),
        ("not a PNG", not_png),
    ):
        a(
            "base",
            f"f4 {label} (digest updated): release",
            image_at(FILTERED, make, release_args(key)),
            check=consistent,
        )
        a("base", f"f4 {label} (digest updated): filter", image_at(CANDIDATES, make, ["filter", CANDIDATES]))

    def dup(where: str, args: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            duplicate_id(ws, where)
            if where == FILTERED:
                fake_report(ws)
            return args

        return fn

    a("base", "f4 duplicate sample id: filter", dup(CANDIDATES, ["filter", CANDIDATES]))
    a("base", "f4 duplicate sample id: validate", dup(FILTERED, vargs))
    a("base", "f4 duplicate sample id: release", dup(FILTERED, release_args(key)), check=consistent)

    def signed(plant: Callable[[Path], None], args: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            plant(ws)
            sign_anyway(ws, key)
            return args

        return fn

    def null_digest(ws: Path) -> None:
        shutil.copy(ws / FILTERED / "manifest.parquet", ws.parent / "original-manifest.parquet")
        rows = _rows(ws, FILTERED)
        rows[0]["image_sha256"] = None
        _write_rows(ws, FILTERED, rows)

    verify = ["verify", "digits@1.0.0"]
    a("base", "f4 signed manifest with a null image_sha256: verify", signed(null_digest, verify))
    a("base", "f4 signed duplicate sample id: verify", signed(lambda ws: duplicate_id(ws, FILTERED), verify))
    a(
        "base",
        "f4 signed shard with an unlisted member: verify",
        signed(lambda ws: unlisted_member(ws, FILTERED), verify),
    )
    a(
        "base",
        "f4 signed shard, ustar magic altered and prefix set: verify",
        signed(lambda ws: ustar_prefix(ws, FILTERED), verify),
    )
    a(
        "base",
        "f4 signed truncated PNG: verify",
        signed(lambda ws: replace_image(ws, FILTERED, truncated), verify),
    )

    def loader(plant: Callable[[Path], None]) -> Callable[[Path], list[str]]:
        """The release loader (registry.releases.loader, what `train` and users' scripts read with) over
        a signed release: run in the setup, its verdict handed to a command that fails on it."""

        def fn(ws: Path) -> list[str]:
            from registry.core.errors import SynthregError
            from registry.releases.loader import open_release

            plant(ws)
            sign_anyway(ws, key)
            try:
                reader = open_release(ws, "digits@1.0.0")
                n = sum(1 for _ in reader)
            except SynthregError as e:
                return ["show", f"loader refused: {str(e)[:100]}"]  # not a ref: exits 1, an error line
            return ["show", "digits"] if n >= 0 else []  # read all: exit 0, a silent acceptance

        return fn

    a(
        "base",
        "f4 loader: signed shard with an unlisted member",
        loader(lambda ws: unlisted_member(ws, FILTERED)),
    )
    a("base", "f4 loader: signed duplicate sample id", loader(lambda ws: duplicate_id(ws, FILTERED)))
    a("base", "f4 loader: signed null image_sha256", loader(null_digest))
    a("base", "f4 loader: signed truncated PNG", loader(lambda ws: replace_image(ws, FILTERED, truncated)))

    def manifest_file(make: Callable[[Path, Path], None]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            make(ws, ws / FILTERED / "manifest.parquet")
            return vargs

        return fn

    def empty(ws: Path, path: Path) -> None:
        t = mf.read_table(path)
        pq.write_table(t.slice(0, 0), path)

    def missing_column(ws: Path, path: Path) -> None:
        t = mf.read_table(path)
        pq.write_table(t.drop_columns(["phash"]), path)

    a("base", "f4 empty filtered manifest: validate", manifest_file(empty))
    a("base", "f4 filtered manifest missing a column: validate", manifest_file(missing_column))
    a(
        "base",
        "f4 filtered manifest not Parquet: validate",
        manifest_file(lambda ws, p: p.write_text("id,x\n1,2\n")),
    )
    a("base", "f4 validate (ordinary)", lambda ws: vargs, hostile=False)

    # 5. Newlines that forge output.
    a(
        "released",
        "f5 withdraw --actor with a newline",
        lambda ws: [*withdraw, "--actor", f"a\n{FORGED}"],
        check=no_forged_line,
    )
    a(
        "released",
        "f5 withdraw --reason with a newline",
        lambda ws: [*withdraw[:-1], f"r\n{FORGED}"],
        check=no_forged_line,
    )
    a("base", "f5 release --actor with a newline", lambda ws: [*release_args(key), "--actor", f"a\n{FORGED}"])
    a(
        "base",
        "f5 waive --reason with a newline",
        lambda ws: [*waive[:-4], f"r\n{FORGED}", *waive[-2:], "--key", str(key)],
        check=no_forged_line,
    )
    a(
        "released",
        "f5 derive --reason with a U+2028 line separator",
        lambda ws: ["derive", "digits@1.0.0", "--version", "1.0.1", "--reason", f"r\u2028{FORGED}"],
    )

    def env_actor(args: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            os.environ["SYNTHREG_ACTOR"] = f"a\n{FORGED}"
            return args

        return fn

    a("released", "f5 $SYNTHREG_ACTOR with a newline: withdraw", env_actor(withdraw))
    a("released", "f5 show digits@ (an empty version)", lambda ws: ["show", "digits@"])
    a("released", "f5 show digits@1.0.0 with a newline", lambda ws: ["show", f"digits@1.0.0\n{FORGED}"])

    def forged_signoff(ws: Path) -> list[str]:
        path = ws / RELEASED / "signoffs.json"
        signoffs = json.loads(path.read_text())
        forged = dict(signoffs[0]) | {"name": f"Mallory\n{FORGED}", "keyid": "e" * 64}
        path.write_text(json.dumps([*signoffs, forged], indent=2))
        return ["verify", "digits@1.0.0"]

    a(
        "released",
        "f5 sign-off name with a newline, untrusted key: verify",
        forged_signoff,
        hostile=None,
        check=no_forged_line,
    )

    def forged_event(ws: Path) -> list[str]:
        from registry.store import audit

        heads = audit.head(ws)
        body = {
            "kind": "withdrawal",
            "time": "2099-01-01T00:00:00Z",
            "actor": f"Mallory\n{FORGED}",
            "subject": f"digits@1.0.0\n{FORGED}",
            "details": {"reason": f"r\n{FORGED}"},
            "parents": heads.heads if heads else [],
        }
        body["hash"] = audit.content_hash(body)
        text = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
        (ws / audit.EVENTS / f"{body['hash']}.json").write_text(text)
        return ["log"]

    a("released", "f5 audit event with newlines: log", forged_event, hostile=None, check=no_forged_line)

    def forged_then(cmd: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            forged_event(ws)
            return cmd

        return fn

    for cmd in (["list"], ["show", "digits@1.0.0"]):
        a(
            "released",
            f"f5 audit event with newlines: {' '.join(cmd)}",
            forged_then(cmd),
            hostile=None,
            check=no_forged_line,
        )
    a("released", "f5 withdraw (ordinary)", lambda ws: withdraw, hostile=False, check=consistent)

    # 6. Paths and claims out of MLflow records.
    def mlflow_run(profile: object | None, args: Callable[[str], list[str]], claim: bool = False) -> Callable:
        def fn(ws: Path) -> list[str]:
            from mlflow.entities import Dataset, DatasetInput

            from registry.downstream import tracking

            os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws}/mlflow.db"
            c = tracking.client(ws)
            exp = c.create_experiment("hostile", artifact_location=(ws.parent / "art").as_uri())
            if claim:  # a run claiming digits@1.0.0 with its right digest
                sha = hashlib.sha256((ws / RELEASED / "data/manifest.parquet").read_bytes()).hexdigest()
                run = c.create_run(
                    exp, tags={tracking.TAG_DATASET: "digits@1.0.0", tracking.TAG_MANIFEST: sha}
                )
                ds = Dataset(name="digits@1.0.0", digest=sha[:36], source_type="synthreg", source="x")
            else:
                run = c.create_run(exp)
                text = profile if isinstance(profile, str) else json.dumps(profile)
                ds = Dataset(
                    name="digits@working", digest="3" * 36, source_type="synthreg", source="x", profile=text
                )
            c.log_inputs(run.info.run_id, [DatasetInput(ds, [])])
            return args(run.info.run_id)

        return fn

    def not_resolved(ws: Path, result: Any) -> tuple[str, str] | None:
        if '"resolved": true' in result.output.replace(" ", "").replace('":', '": '):
            return "silent acceptance", "a dataset resolved through a path out of an MLflow record"
        return None

    def says_unsigned(ws: Path, result: Any) -> tuple[str, str] | None:
        if "UNSIGNED" not in result.output:
            return "silent acceptance", "the run's claim is not called unsigned"
        return None

    outside = {"manifest_sha256": "3" * 64, "dvc_md5": "../../../../sentinel"}
    a(
        "released",
        "f6 profile dvc_md5 ../../..: trace run",
        mlflow_run(outside, lambda r: ["trace", "run", r, "--json"]),
        hostile=None,
        check=not_resolved,
    )
    a(
        "released",
        "f6 profile a JSON list: trace run",
        mlflow_run("[1, 2, 3]", lambda r: ["trace", "run", r]),
        hostile=None,
    )
    a(
        "released",
        "f6 profile a JSON list: impact --source",
        mlflow_run("[1, 2, 3]", lambda r: ["impact", "--source", "sklearn-digits"]),
        hostile=None,
    )
    a(
        "released",
        "f6 a run claiming digits@1.0.0: trace run",
        mlflow_run(None, lambda r: ["trace", "run", r], claim=True),
        hostile=None,
        check=says_unsigned,
    )
    a(
        "released",
        "f6 a run claiming digits@1.0.0: impact --version",
        mlflow_run(None, lambda r: ["impact", "--version", "digits@1.0.0"], claim=True),
        hostile=None,
        check=says_unsigned,
    )
    a("released", "f6 run id ../../etc: trace run", lambda ws: ["trace", "run", "../../etc"])

    # 7. Markup in exports: a recipe whose generator name and prompt carry HTML, generated for real.
    def markup(ws: Path) -> list[str]:
        from generators.filter import filter_manifest
        from generators.generate import generate
        from registry.records.dataset import GenerateParams
        from tests.registry.conftest import commit_all, validate_ws

        recipe = yaml.safe_load((ws / RECIPE).read_text())
        recipe["generator"]["name"] = "<img src=x onerror=alert(1)>"
        recipe["prompt_templates"] = [t + " <iframe src=//x></iframe>" for t in recipe["prompt_templates"]]
        (ws / RECIPE).write_text(yaml.safe_dump(recipe))
        shutil.rmtree(ws / "data" / "digits")
        generate(Path(RECIPE), ws, CANDIDATES, GenerateParams(batch_size=6, shard_size=6, threads=1))
        filter_manifest(CANDIDATES, ws, FILTERED)
        validate_ws(ws)
        commit_all(ws, "hostile names")
        return release_args(key)

    def no_raw_markup(ws: Path, result: Any) -> tuple[str, str] | None:
        for name in ("card.md", "README.md"):
            path = ws / RELEASED / name
            text = path.read_text() if path.is_file() else ""
            for raw in ("<img src=x", "<iframe"):
                if raw in text:
                    return "silent acceptance", f"{name} holds raw {raw!r}"
        return None

    a(
        "base",
        "f7 generator name and prompt with HTML: release, card.md and README.md",
        markup,
        hostile=None,
        check=both(no_raw_markup, consistent),
    )

    # 8. Retired keys and the unsigned tail (the forged release event at the tail is attacks.py's).
    def withdrawal_deleted(ws: Path) -> list[str]:
        """The withdrawal and every event after the last signed checkpoint deleted: the release must not
        read as current."""
        from registry.releases.withdraw import withdraw as do_withdraw
        from registry.store import audit

        before = {p.name for p in (ws / audit.EVENTS).iterdir()}
        do_withdraw(ws, "digits@1.0.0", "consent withdrawn", key=key)
        for p in (ws / audit.EVENTS).iterdir():
            if p.name not in before:
                p.unlink()
        for p in (ws / RELEASED).glob("withdrawal*"):
            p.unlink()
        return ["verify", "digits@1.0.0"]

    a("released", "f8 withdrawal deleted with the unsigned tail: verify", withdrawal_deleted)

    def retire_bob(ws: Path) -> None:
        """A root in which Bob's approver key is retired as of now, made the one in force."""
        from datetime import UTC, datetime

        doc = yaml.safe_load((team / "team.yaml").read_text())
        bob = next(k for k in doc["keys"] if k["name"] == "Bob")
        bob["valid_until"] = datetime.now(UTC).isoformat()
        retired = ws.parent / "bob-retired.yaml"
        retired.write_text(yaml.safe_dump(doc, sort_keys=False))
        os.environ["SYNTHREG_TRUST"] = str(retired)

    def bob_approved(covered: bool) -> Callable[[Path], list[str]]:
        """Bob approves (the candidate becomes final and tagged); with ``covered``, Carol signs the log
        while his key is live; then his key is retired. To a verifier an approval nobody else vouched for
        before the retirement is what one Bob backdated after it looks like."""

        def setup(ws: Path) -> list[str]:
            from registry.releases.approve import approve
            from registry.releases.checkpoint import sign_checkpoint

            os.environ["SYNTHREG_TRUST"] = str(team / "team.yaml")
            approve(ws, "digits@1.0.0", team / "Bob.pem")
            if covered:
                sign_checkpoint(ws, key=team / "Carol.pem")
            retire_bob(ws)
            return ["verify", "digits@1.0.0"]

        return setup

    def bob_waived(ws: Path) -> list[str]:
        """The only waiver of a failing rule is Bob's; then his key is retired."""
        from datetime import date

        from registry.releases.waive import waive

        rule = "bias.observed-collapse"
        for p in (ws / "waivers").glob(f"{rule}--*"):
            p.unlink()
        os.environ["SYNTHREG_TRUST"] = str(team / "team.yaml")
        waive(ws, rule, "digits", "a toy set", date(2099, 1, 1), key=team / "Bob.pem")
        retire_bob(ws)
        return ["validate", FILTERED, "--out", POLICY]

    a("candidate", "f8 retired approver's approval, vouched by nobody: verify", bob_approved(False))
    a(
        "candidate",
        "f8 retired approver's approval under Carol's earlier checkpoint: verify",
        bob_approved(True),
        hostile=False,
    )
    a("base", "f8 retired approver's waiver, vouched by nobody: validate", bob_waived)

    def forged_release_event(ws: Path) -> list[str]:
        """A `release` event with a valid hash naming the heads, appended by hand, for a version no
        signed record backs: plain `log --verify` (no --require-signed) must name it."""
        from registry.store import audit

        audit.append(ws, "release", "digits@9.9.9", {"manifest_sha256": "0" * 64}, actor="Release Tester")
        return ["log", "--verify"]

    a("released", "f8 forged release event at the tail: log --verify", forged_release_event)

    # 9. Concurrency and recovery.
    def second_filter(ws: Path) -> list[str]:
        from registry.core.locks import LOCK_NAME
        from tests.registry.test_recovery import stop_once_locked

        first = subprocess.Popen(  # the installed command, as a user runs it in the workspace
            [str(Path(sys.executable).parent / "synthreg"), "filter", CANDIDATES, "-w", str(ws)],
            cwd=ws,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stop_once_locked(first, ws / FILTERED / LOCK_NAME)
        held.append(first)
        return ["filter", CANDIDATES]

    held: list[subprocess.Popen] = []

    def resume(ws: Path, result: Any) -> tuple[str, str] | None:
        for p in held:
            os.kill(p.pid, signal.SIGCONT)
            if p.wait(timeout=100) != 0:
                return "inconsistent state", f"the first filter failed: {p.communicate()[1][-160:]!r}"
        return None

    a("base", "f9 two filters into one folder: the second", second_filter, check=resume)
    a(
        "candidate",
        "f9 doctor on a healthy candidate",
        in_team(lambda ws: ["doctor"]),
        hostile=False,
        check=consistent,
    )
    a(
        "candidate",
        "f9 doctor --repair on a healthy candidate",
        in_team(lambda ws: ["doctor", "--repair"]),
        hostile=False,
        check=consistent,
    )

    def kill(args: list[str], at: str, team_root: bool = False) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            if team_root:
                os.environ["SYNTHREG_TRUST"] = str(team / "team.yaml")
            killed(ws, args, at)
            return ["doctor", "--repair"]

        return fn

    def derive(ws: Path) -> list[str]:  # 1.0.1: 1.0.0 less its first sample
        sid = mf.read_table(ws / RELEASED / "data/manifest.parquet")["sample_id"][0].as_py()
        return ["derive", "digits@1.0.0", "--version", "1.0.1", "--reason", "r", "--exclude-sample", sid]

    for at in ("before:commit", "after:audit", "before:tag"):
        a(
            "base",
            f"f9 release killed {at}: doctor --repair",
            kill(release_args(key), at),
            hostile=False,
            check=consistent,
        )
    a(
        "candidate",
        "f9 approve killed before:tag: doctor --repair",
        kill(["approve", "digits@1.0.0", "--key", str(team / "Bob.pem")], "before:tag", team_root=True),
        hostile=False,
        check=consistent,
    )
    a(
        "released",
        "f9 withdraw killed before:commit: doctor --repair",
        kill([*withdraw, "--key", str(key)], "before:commit"),
        hostile=False,
        check=consistent,
    )

    # 10. Small ones.
    a(
        "base",
        "f10 waive --scope dig* (matches nothing)",
        lambda ws: [
            "waive",
            "bias.requested-balance",
            "--scope",
            "dig*",
            "--reason",
            "r",
            "--expires",
            "2099-01-01",
            "--key",
            str(key),
        ],
    )

    def slow_regex(ws: Path) -> list[str]:
        pack = {
            "id": "slow",
            "description": "catastrophic backtracking",
            "rules": [
                {
                    "id": "x.slow",
                    "kind": "prompt-deny",
                    "severity": "error",
                    "description": "d",
                    "patterns": ["(a+)+$"],
                }
            ],
        }
        (ws / "fz").mkdir()
        (ws / "fz/pack.yaml").write_text(yaml.safe_dump(pack))
        rows = _rows(ws, FILTERED)
        rows[0]["prompt"] = "a" * 5000 + "!"
        _write_rows(ws, FILTERED, rows)
        return [*vargs, "--pack", "fz/pack.yaml"]

    a("base", "f10 pack regex (a+)+$ over a long prompt: validate", slow_regex)

    def derive_lock(ws: Path) -> list[str]:
        killed(ws, [*derive(ws), "--key", str(key)], "before:commit")
        (ws / ".git" / "index.lock").touch()
        return ["doctor", "--repair"]

    def rerun_derive(ws: Path, result: Any) -> tuple[str, str] | None:
        again = cli(ws, *derive(ws), "--key", str(key))
        if again.exit_code != 0 and "exists" not in again.output:
            return "inconsistent state", f"derive re-run: {again.output.strip()[-160:]!r}"
        return consistent(ws, result)

    a(
        "released",
        "f10 derive killed in git, index.lock left: doctor --repair",
        derive_lock,
        hostile=False,
        check=rerun_derive,
    )
    a("base", "f10 waive --scope digits (ordinary)", lambda ws: [*waive, "--key", str(key)], hostile=False)
    return out
