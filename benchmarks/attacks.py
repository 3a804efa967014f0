"""Re-run the hostile-input attacks of issue 14 (items 2, 4, 5 and the listed tracebacks and silent
acceptances) and of issue 24 (its families, in ``attacks24.py``), and print the counts.

    python benchmarks/attacks.py            # several minutes on 2 cores
    python benchmarks/attacks.py -v         # one line per attack
    python benchmarks/attacks.py --family 4 # issue 24's family 4 only (0: issue 14's attacks; repeatable)
    python benchmarks/attacks.py --only verify   # attacks whose name holds "verify"
    python benchmarks/attacks.py --names-rows 1000000   # the names check's cost on a big manifest

Each attack runs the real CLI (in process, typer's CliRunner) on a fresh copy of a small workspace (git +
DVC, 12 images: validated, or with digits 1.0.0 released, or with it a candidate of a team), signed
under a trust root outside it, with a sentinel folder beside it, and is classified:

- traceback: exit 70 (internal error) or a Python traceback in the output;
- silent acceptance: a hostile input the command accepted (exit 0) where it should have refused;
- inconsistent state: something was written beside the workspace, or a ``*.tmp`` file was left, or what
  the attack checks afterwards (``Attack.check``: doctor, a re-run, the output) does not hold;
- clear error: refused with an ``error:`` line (exit 1) or a failing policy report (exit 3), as expected;
- correct: an ordinary input that succeeded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from registry.cli import app  # noqa: E402
from registry.core.digests import sha256_file  # noqa: E402
from registry.store import manifest as mf  # noqa: E402
from registry.store.shards import tar_bytes  # noqa: E402

CANDIDATES, FILTERED, POLICY, RECIPE = (
    "data/digits/candidates",
    "data/digits/filtered",
    "data/digits/policy",
    "recipes/digits.yaml",
)
runner = CliRunner()


@dataclass
class Attack:
    name: str
    setup: Callable[[Path], list[str]]  # prepares the copy; returns the CLI arguments (without -w)
    hostile: bool | None = True  # True: it must be refused; False: it must succeed; None: either
    leak: str | None = None  # text of a file given to it that no message may repeat
    # What must hold afterwards (issue 24: doctor finds nothing unfinished, a row is rejected, no line is
    # forged): (verdict, why) when it does not, else None. Called with the workspace and typer's Result.
    check: Callable[[Path, Any], tuple[str, str] | None] | None = None


def sh(cwd: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


def build(top: Path) -> tuple[Path, Path]:
    """A validated workspace and a copy with digits 1.0.0 released, built as the tests build them
    (``tests.registry.conftest.build_base``: waivers signed, a DVC remote beside it), under a solo trust
    root outside it; ``$SYNTHREG_TRUST`` and ``$SYNTHREG_SIGNING_KEY`` name it and its key for the run. The
    private key is ``top/key.pem``."""
    from registry.releases.release import release
    from registry.trust.signing import keygen
    from tests.conftest import TrustSetup
    from tests.registry.conftest import build_base, clone

    r = keygen(top / "pub", top / "key.pem", name="Attacker", trust=top / "trust.yaml")
    assert r.trust is not None
    os.environ["SYNTHREG_TRUST"], os.environ["SYNTHREG_SIGNING_KEY"] = str(r.trust), str(r.private)
    base = build_base(top, TrustSetup(Path(r.private), r.trust, r.keyid, r.public)).ws
    released = clone(base, top / "released")
    release("digits", "1.0.0", released, key=r.private)
    return base, released


# --- the attacks ---------------------------------------------------------------------------------------

NAMES = {
    "member ../../evil.png": ("member", "../../evil.png"),
    "member /tmp/evil.png": ("member", "/tmp/evil.png"),
    "id ../x": ("id", "../x"),
    "id with newline": ("id", "digits-1\nFORGED"),
    "id with NUL": ("id", "digits-1\x00x"),
    "shard ../outside": ("shard", "../outside/shard.tar"),
    "shard absolute, outside": ("shard", "ABSOLUTE"),
    "null image_sha256": ("image_sha256", None),
}


def plant(ws: Path, where: str, kind: str, value: str | None) -> None:
    path = ws / where / "manifest.parquet"
    rows = mf.read_table(path).to_pylist()
    row = rows[0]
    shard = ws / row["shard"]
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    old = row["member"]
    if kind == "member":
        row["member"] = value
    elif kind == "id":
        row["sample_id"], row["member"] = value, f"{value}.png"
    elif kind == "shard":  # a copy of the shard outside the workspace, named relatively or absolutely
        value = str(ws.parent / "abs-shard.tar") if value == "ABSOLUTE" else value
        assert value is not None
        (ws / value).resolve().parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shard, (ws / value).resolve())
        row["shard"] = value
    else:
        row[kind] = value
    if row["member"] != old:
        shard.write_bytes(tar_bytes([(row["member"] if n == old else n, b) for n, b in members]))
    nullable = pa.schema([f.with_nullable(True) for f in mf.SCHEMA])  # as any Parquet writer may
    pq.write_table(pa.Table.from_pylist(rows, schema=nullable), path)


def fake_report(ws: Path) -> None:
    """The policy report edited to name the planted manifest, and both committed, as an insider would
    (release refuses a manifest that git does not hold)."""
    report = ws / POLICY / "report.json"
    data = json.loads(report.read_text())
    data["manifest_sha256"] = sha256_file(ws / FILTERED / "manifest.parquet")
    report.write_text(json.dumps(data))
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "planted")


def name_attacks(key: Path) -> list[Attack]:
    out = []
    for label, (kind, value) in NAMES.items():

        def filt(ws: Path, kind: str = kind, value: str | None = value) -> list[str]:
            plant(ws, CANDIDATES, kind, value)
            return ["filter", CANDIDATES]

        def val(ws: Path, kind: str = kind, value: str | None = value) -> list[str]:
            plant(ws, FILTERED, kind, value)
            return ["validate", FILTERED, "--out", POLICY]

        def rel(ws: Path, kind: str = kind, value: str | None = value) -> list[str]:
            plant(ws, FILTERED, kind, value)
            fake_report(ws)
            return ["release", "digits", "--version", "1.0.0", "--key", str(key)]

        def ver(ws: Path, kind: str = kind, value: str | None = value) -> list[str]:
            """Signed by a synthreg that did not check names (the checks switched off)."""
            from attacks24 import sidecars_keeping_all, skipped_recheck, unchecked_members

            from registry.releases.release import release

            plant(ws, FILTERED, kind, value)
            fake_report(ws)
            with (
                mock.patch("registry.releases.publish.check_manifest", lambda *a, **k: None, create=True),
                mock.patch("registry.releases.publish.checked_members", unchecked_members),
                mock.patch("registry.releases.release._recheck", skipped_recheck),
                mock.patch("registry.releases.publish.add_sidecars", sidecars_keeping_all),
                mock.patch(
                    "registry.releases.publish.inside", lambda ws, p, what: (ws / p).resolve(), create=True
                ),
                mock.patch(
                    "registry.releases.release.inside", lambda ws, p, what: (ws / p).resolve(), create=True
                ),
            ):
                release("digits", "1.0.0", ws, key=key)
            return ["verify", "digits@1.0.0"]

        out += [
            Attack(f"filter: {label}", filt),
            Attack(f"validate: {label}", val),
            Attack(f"release: {label}", rel),
        ]
        if kind != "image_sha256":
            out.append(Attack(f"verify: {label}", ver))
    return out


def _symlink_out(ws: Path, rel: str) -> None:
    target = ws.parent / "sentinel" / Path(rel).name
    src = ws / rel
    if src.is_dir():
        shutil.copytree(src, target)
        shutil.rmtree(src)
    elif src.exists():
        shutil.copy(src, target)
        src.unlink()
    src.parent.mkdir(parents=True, exist_ok=True)
    src.symlink_to(target)


def _bomb(key: str) -> str:
    """A "billion laughs" (9**9 values once expanded) as the value of ``key``, which the model validates
    (and, on main, quoted back in its error message, expanding every alias)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + f"\n{key}: *a8\n"


def _write(ws: Path, rel: str, text: str | bytes) -> None:
    (ws / rel).parent.mkdir(parents=True, exist_ok=True)
    (ws / rel).write_bytes(text if isinstance(text, bytes) else text.encode())


def _params(ws: Path, section: str, values: dict) -> None:
    p = yaml.safe_load((ws / "params.yaml").read_text())
    p[section] = p.get(section, {}) | values
    _write(ws, "params.yaml", yaml.safe_dump(p))


def other_attacks(key: Path) -> list[Attack]:
    vargs = ["validate", FILTERED, "--out", POLICY]
    ref = ["derive", "digits@1.0.0", "--version", "1.0.1", "--reason", "r", "--key", str(key)]

    def a(
        name: str, fn: Callable[[Path], list[str]], hostile: bool = True, leak: str | None = None
    ) -> Attack:
        return Attack(name, fn, hostile, leak)

    def forged_tail_event(ws: Path) -> list[str]:
        # Issue 24 family 8: a `release` event with a valid hash naming the heads, appended by hand. Nothing
        # in the log can tell it from a real one; it is named unsigned, and --require-signed refuses it.
        from registry.store import audit

        heads = audit.head(ws)
        body = {
            "kind": "release",
            "time": "2099-01-01T00:00:00Z",
            "actor": "Release Tester",
            "subject": "digits@9.9.9",
            "details": {},
            "parents": heads.heads if heads else [],
        }
        body["hash"] = audit.content_hash(body)
        text = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
        (ws / audit.EVENTS / f"{body['hash']}.json").write_text(text)
        return ["log", "--verify", "--require-signed"]

    def tar_extra(ws: Path) -> list[str]:
        shard = ws / CANDIDATES / "shards/shard-00000.tar"
        with tarfile.open(shard) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
        shard.write_bytes(tar_bytes([*members, ("../../evil.png", b"x")]))
        return ["release", "digits", "--version", "1.0.0", "--key", str(key)]

    def retype(ws: Path) -> list[str]:
        path = ws / CANDIDATES / "manifest.parquet"
        t = mf.read_table(path)
        import pyarrow.parquet as pq

        pq.write_table(t.set_column(t.column_names.index("seed"), "seed", pa.array(["x"] * t.num_rows)), path)
        return ["filter", CANDIDATES]

    def garbage_png(ws: Path) -> list[str]:
        path = ws / CANDIDATES / "manifest.parquet"
        rows = mf.read_table(path).to_pylist()
        shard = ws / rows[0]["shard"]
        with tarfile.open(shard) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
        junk = b"not a png"
        rows[0]["image_sha256"] = hashlib.sha256(junk).hexdigest()
        shard.write_bytes(tar_bytes([(members[0][0], junk), *members[1:]]))
        mf.write_table(pa.Table.from_pylist(rows, schema=mf.SCHEMA), path)
        return ["filter", CANDIDATES]

    def pack(text: str | bytes) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            _write(ws, "fz/pack.yaml", text)
            return [*vargs, "--pack", "fz/pack.yaml"]

        return fn

    def recipe_text(text: str, cmd: str = "validate", append: bool = False) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:  # append: after the real recipe (a later key wins in PyYAML)
            _write(ws, "fz/recipe.yaml", ((ws / RECIPE).read_text() if append else "") + text)
            return (
                ["generate", "fz/recipe.yaml"]
                if cmd == "generate"
                else [*vargs, "--recipe", "fz/recipe.yaml"]
            )

        return fn

    def params(section: str, values: dict, cmd: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            _params(ws, section, values)
            return cmd

        return fn

    def params_file(text: str) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            _write(ws, "params.yaml", text)
            return vargs

        return fn

    def symlinked(rel: str, cmd: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            _symlink_out(ws, rel)
            return cmd

        return fn

    def outside_params(cmd: list[str]) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:  # a well-formed params file, but outside the workspace
            outside = ws.parent / "outside-params.yaml"
            shutil.copy(ws / "params.yaml", outside)
            return [*cmd, "--params", str(outside)]

        return fn

    def exclude_file(data: bytes) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            f = ws.parent / "ids.txt"  # read only, so it may be outside
            f.write_bytes(data)
            return [*ref, "--exclude-samples", str(f)]

        return fn

    def waivers(text: str) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            _write(ws, "waivers.yaml", text)
            return vargs

        return fn

    def reproduce_on(device: str) -> Callable[[Path], list[str]]:
        def fn(ws: Path) -> list[str]:
            sid = mf.read_table(ws / FILTERED / "manifest.parquet")["sample_id"][0].as_py()
            return ["reproduce", sid, "--device", device]

        return fn

    newline_key = yaml.safe_dump(
        {
            "id": "p",
            "description": "p",
            "rules": [
                {
                    "id": "x.r",
                    "kind": "prompt-length",
                    "severity": "warn",
                    "description": "d",
                    "max_chars": 5,
                    "bad\nkey": 1,
                }
            ],
        }
    )
    first_id = None

    def derive_ok(ws: Path) -> list[str]:
        nonlocal first_id
        sid = mf.read_table(ws / "releases/digits/1.0.0/data/manifest.parquet")["sample_id"][0].as_py()
        f = ws.parent / "ids.txt"
        f.write_text(sid + "\n")
        return [*ref, "--exclude-samples", str(f)]

    return [
        a("release: shard with an extra ../../evil.png member", tar_extra),
        a(
            "release: shard symlinked out of the workspace",
            symlinked(
                CANDIDATES + "/shards/shard-00000.tar",
                ["release", "digits", "--version", "1.0.0", "--key", str(key)],
            ),
        ),
        a("filter: wrong column type", retype),
        a("filter: image bytes not a PNG (digest fixed)", garbage_png),
        a("validate: audit log symlinked out", symlinked("audit/events", vargs)),
        a("filter: audit log symlinked out", symlinked("audit/events", ["filter", CANDIDATES])),
        a("log --verify --require-signed: forged tail event", forged_tail_event),
        a("validate: policy folder symlinked out", symlinked(POLICY, ["validate", FILTERED])),
        a("filter: filtered folder symlinked out", symlinked(FILTERED, ["filter", CANDIDATES])),
        a(
            "release: releases/digits symlinked out",
            symlinked("releases/digits", ["release", "digits", "--version", "1.0.0", "--key", str(key)]),
        ),
        a("generate: --params outside", outside_params(["generate"])),
        a("filter: --params outside", outside_params(["filter", CANDIDATES])),
        a("validate: --params outside", outside_params(vargs)),
        a("train: --params outside", outside_params(["train"])),
        a("generate: recipe alias bomb", recipe_text(_bomb("identities"), "generate", append=True)),
        a("validate: recipe alias bomb", recipe_text(_bomb("prompt_templates"), append=True)),
        a("validate: pack alias bomb", pack(_bomb("rules"))),
        a("validate: waivers alias bomb", waivers(_bomb("waivers"))),
        a("validate: params alias bomb", params_file(_bomb("generate"))),
        a("validate: recursive alias", recipe_text("a: &a [*a]\n")),
        a("validate: nesting 500 deep", recipe_text("x: " + "[" * 500 + "]" * 500 + "\n")),
        a("validate: 5,000-digit integer", recipe_text("seed: 1" + "0" * 5000 + "\n")),
        a("validate: 5 MiB recipe", recipe_text("# " + "x" * (5 << 20) + "\n")),
        a("validate: non-UTF-8 pack", pack(b"id: p\n\xff\xfe\n")),
        a("validate: pack key with a newline", pack(newline_key)),
        a("derive: non-UTF-8 --exclude-samples", exclude_file(b"\xff\xfe\n")),
        a(
            "derive: --exclude-samples is a password file",
            exclude_file(b"root:x:0:0:root:/root:/bin/bash\n"),
            leak="root:x",
        ),
        a(
            "derive: --exclude-samples with a secret id",
            exclude_file(b"private-person-name\n"),
            leak="private-person-name",
        ),
        a("generate: device cuda:7", params("generate", {"device": "cuda:7"}, ["generate"])),
        a("generate: threads 1000000", params("generate", {"threads": 1000000}, ["generate"])),
        a("generate: batch_size 10^9", params("generate", {"batch_size": 10**9}, ["generate"])),
        a("train: epochs 10^12", params("train", {"epochs": 10**12}, ["train"])),
        a("reproduce: --device bogus", reproduce_on("bogus")),
        a("reproduce: --device cuda:7", reproduce_on("cuda:7")),
        a(
            "release: version 99999999999999999999999.0.0",
            lambda ws: ["release", "digits", "--version", "99999999999999999999999.0.0", "--key", str(key)],
        ),
        a("show: ref ../../etc@1.0.0", lambda ws: ["show", "../../etc@1.0.0"]),
        a("verify: ref digits@1.0.0/../../x", lambda ws: ["verify", "digits@1.0.0/../../x"]),
        a("derive: ids from a file (ordinary)", derive_ok, hostile=False),
        a("verify digits@1.0.0 (ordinary)", lambda ws: ["verify", "digits@1.0.0"], hostile=False),
        a("validate (ordinary)", lambda ws: vargs, hostile=False),
        a("show digits (ordinary)", lambda ws: ["show", "digits"], hostile=False),
    ]


def _outside(ws: Path) -> dict[str, str]:
    return {
        p.relative_to(ws.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "d"
        for p in sorted(ws.parent.rglob("*"))
        if not p.is_relative_to(ws) and not p.is_symlink()
    }


LIMIT_S = 120  # an attack still running after this is counted as a traceback (a hang)
MEMORY = 8 << 30  # address space of the child running an attack: a bomb fails fast, the machine is shared


def run(attack: Attack, source: Path, top: Path) -> tuple[str, str]:
    """``attempt`` in a forked child, so an attack that kills or hangs its process is counted too."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        queue.put(attempt(attack, source, top))

    proc = ctx.Process(target=child)
    proc.start()
    try:
        return queue.get(timeout=LIMIT_S)
    except Empty:
        return (
            "traceback",
            f"no result: the process {'hung' if proc.is_alive() else 'died'} ({proc.exitcode})",
        )
    finally:
        proc.kill()
        proc.join()


def attempt(attack: Attack, source: Path, top: Path) -> tuple[str, str]:
    case = Path(tempfile.mkdtemp(dir=top))
    ws = case / "ws"
    shutil.copytree(source, ws, symlinks=True)
    (case / "sentinel").mkdir()
    os.chdir(case)  # a relative path an attack names lands beside the workspace (counted), never in the repo
    (case / "sentinel" / "keep.txt").write_text("untouched\n")
    try:
        args = attack.setup(ws)
    except Exception as e:  # the attack itself could not be staged: report it, do not count it as passing
        return "inconsistent state", f"setup failed: {type(e).__name__}: {e}"
    before = _outside(ws)
    result = runner.invoke(app, [*args, "-w", str(ws)])
    out = result.output.strip().splitlines()
    first = out[0] if out else ""
    errors = [line for line in out if line.startswith("error: ")]
    line = (errors[0] if errors else out[-1] if result.exit_code and out else first)[:160]
    # verify's exits (registry.core.errors): 5 untrusted and 7 withdrawn refuse; 6 (a candidate) and 8
    # (final under an older root) accept the content
    accepted = result.exit_code in (0, 6, 8)
    refused = (  # an error line (some commands print what they found first), or a failing report
        errors and result.exit_code != 0
    ) or (result.exit_code in (1, 3, 5, 7) and "FAIL" in result.output)
    found = None
    if (
        result.exit_code == 70
        or "Traceback" in result.output
        or result.exit_code not in (0, 1, 2, 3, 5, 6, 7, 8)
    ):
        verdict = "traceback"
    elif _outside(ws) != before or any(p.name.endswith(".tmp") or ".tmp-" in p.name for p in ws.rglob("*")):
        verdict = "inconsistent state"
    elif attack.check and (found := attack.check(ws, result)):
        verdict, line = found
    elif (attack.hostile and accepted) or (attack.leak and attack.leak in result.output):
        verdict = "silent acceptance"  # accepted, or refused but repeating the file it was given
    elif attack.hostile is False or (attack.hostile is None and accepted):
        verdict = "correct" if accepted else "inconsistent state"
    elif refused:
        verdict = "clear error"
    else:
        verdict = "traceback"
    shutil.rmtree(case, ignore_errors=True)
    return verdict, line


def time_names(rows: int) -> None:
    """The names check over a ``rows``-row manifest (bench_validate.py's), against reading the manifest
    with pyarrow in the same run (best of 3 each)."""
    import time

    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_validate import build_manifest

    from registry.core.names import unsafe_rows

    def best(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.parquet"
        build_manifest(rows, path)
        con = mf.connect(path)
        check = best(lambda: unsafe_rows(con))
        read = best(lambda: pq.read_table(path))
    print(
        f"names check over {rows:,} rows: {check:.2f} s; pyarrow read of the manifest {read:.2f} s; ratio "
        f"{check / read:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--family",
        type=int,
        action="append",
        help="only issue 24's family N (0: issue 14's attacks); repeatable",
    )
    ap.add_argument("--only", help="only attacks whose name holds this text")
    ap.add_argument("--names-rows", type=int, help="only time the names check on a manifest of this size")
    args = ap.parse_args()
    if args.names_rows:
        time_names(args.names_rows)
        return
    import attacks24

    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        os.environ["SYNTHREG_CRASH_DIR"] = str(top / "crashes")
        base, released = build(top)
        key = top / "key.pem"
        attacks = [(a, base) for a in name_attacks(key)] + [
            (a, released if a.name.startswith(("derive", "verify digits", "show digits")) else base)
            for a in other_attacks(key)
        ]
        families = set(args.family or range(11))
        attacks = [(a, s) for a, s in attacks if 0 in families]
        sources = {"base": base, "released": released}
        if families - {0}:  # issue 24's, each named "fN ..." after its family
            sources |= attacks24.build(top, base)
            attacks += [
                (a, sources[s]) for a, s in attacks24.attacks(key) if attacks24.family(a.name) in families
            ]
        attacks = [(a, s) for a, s in attacks if args.only is None or args.only in a.name]
        counts: Counter[str] = Counter()
        for attack, source in attacks:
            verdict, line = run(attack, source, top)
            counts[verdict] += 1
            if args.verbose or verdict not in ("clear error", "correct"):
                print(f"{verdict:18} {attack.name}: {line!r}", flush=True)
    print(
        f"{sum(counts.values())} attempts: {counts['clear error']} clear errors, "
        f"{counts['correct']} correct, "
        f"{counts['traceback']} tracebacks, {counts['silent acceptance']} silent acceptances, "
        f"{counts['inconsistent state']} inconsistent states"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    import attacks  # this file as the module attacks24 builds on, so both use one Attack class

    attacks.main()
