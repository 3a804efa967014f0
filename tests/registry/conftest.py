"""Release workspaces shared by the release and derive tests: a real temporary git + DVC workspace with a
tiny digits dataset generated, filtered and validated by the library (no `dvc repro`), and the same with
digits 1.0.0 released. Module-scoped: each test module builds its own once; a test that changes anything
works on a copy (``fresh``, ``released_copy``; ``.git`` and ``.dvc`` copy fine).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml

from registry.records.config import load_params
from registry.records.policy import PolicyReport
from registry.records.release import Release
from registry.releases.release import release
from registry.releases.waive import waive
from tests.conftest import REPO, TrustSetup, small_recipe, write_yaml

DVC = str(Path(sys.executable).parent / "dvc")
RECIPE = "recipes/digits.yaml"
CANDIDATES = "data/digits/candidates"
FILTERED = "data/digits/filtered"
POLICY = "data/digits/policy"
ACTOR = "Release Tester"
# Error rules a 12-image toy set fails (too few images for balance and consistency); waived, not a bug.
# In report order: the generic pack's rules, then the digits pack's (params.yaml's datasets.digits.validate).
WAIVED = ["quality.identity-consistency", "bias.requested-balance", "bias.observed-collapse"]
# Fails only once a stricter filter rejects half the set (the 1.1.0 release in the diff test).
WAIVED_LATER = ["quality.accepted-share"]
EXPIRES = date(2099, 12, 31)
CONDITIONING = {
    "name": "volunteer-sevens",
    "version": "2026-10",
    "licence": "CC-BY-4.0",
    "role": "conditioning",
    "identities": ["7"],
}
RELEASE_FILES = [
    "README.md",
    "card.md",
    "croissant.json",
    "data.dvc",
    "policy-report.json",
    "policy-report.md",
    "prov.json",
    "release.dsse.json",
    "release.json",
    "report.html",
    "signoffs.json",
]


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the rich tables in a command's output, as lists of stripped cells (a cell
    folded over two lines gives two rows)."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def sh(cwd: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def folder(ws: Path, version: str) -> Path:
    return ws / "releases" / "digits" / version


def tags(ws: Path) -> list[str]:
    return sh(ws, "git", "tag", "--list").split()


def strays(ws: Path) -> list[str]:
    root = ws / "releases" / "digits"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.is_dir() else []


# The policy files the repository's params.yaml names for digits (the generic pack, then its own).
PARTS = ("policies/packs/default.yaml", "policies/packs/digits.yaml", "policies/licenses.yaml")


def tree_digests(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): sha256(p) for p in sorted(path.rglob("*")) if p.is_file()}


def validate_ws(ws: Path, waivers: str | None = "waivers.yaml") -> PolicyReport:
    from policies.engine import validate

    v = load_params(ws / "params.yaml").dataset("digits").validate_
    return validate(FILTERED, ws, RECIPE, v.packs, waivers=waivers, licences=v.licences, out=POLICY)


def commit_all(ws: Path, message: str) -> None:
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", message)


@dataclass(frozen=True)
class Built:
    ws: Path
    key: Path
    record: Release | None = None


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, solo_trust: TrustSetup) -> Built:
    """A git + DVC workspace holding a generated, filtered and validated (waivers applied) 12-image
    set in 2 shards, everything committed (the DVC remote ``storage`` too), the session's solo key's public
    half in keys/. Not released."""
    return build_base(tmp_path_factory.mktemp("release"), solo_trust)


def build_base(top: Path, solo_trust: TrustSetup, recipe_extra: dict | None = None, **generate_kw) -> Built:
    """What ``base`` builds, in ``top``; ``recipe_extra`` is added to the recipe (e.g. a ``marking``),
    ``generate_kw`` passed to generate (e.g. the C2PA key and chain)."""
    from generators.filter import filter_manifest
    from generators.generate import generate
    from registry.records.dataset import GenerateParams

    ws = top / "base"
    ws.mkdir()
    sh(ws, "git", "init", "-q")
    for k, v in {
        "user.name": ACTOR,
        "user.email": "release-tester@example.org",
        "commit.gpgsign": "false",
        "tag.gpgsign": "false",
    }.items():
        sh(ws, "git", "config", k, v)
    sh(ws, DVC, "init", "-q")
    sh(ws, DVC, "config", "core.analytics", "false")
    # Releases push to the default remote (issue 9): a local folder, shared by every copy of this
    # workspace (content-addressed, so they never clash). tests/registry/test_remote.py uses its own.
    sh(ws, DVC, "remote", "add", "-q", "-d", "storage", str(top / "remote"))

    shutil.copytree(REPO / "generators/tiny_digits/model", ws / "generators/tiny_digits/model")
    for part in PARTS:  # as params.yaml names them
        (ws / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / part, ws / part)
    for cache in ws.rglob("__pycache__"):
        shutil.rmtree(cache)
    recipe = small_recipe()
    recipe["generator"]["path"] = "generators/tiny_digits/model"
    # Declared, not used by tiny-digits: a source that conditioned one identity, for `derive
    # --exclude-source` and `impact --source` to find exactly that identity's samples.
    recipe["sources"].append(CONDITIONING)
    recipe.update(recipe_extra or {})
    write_yaml(ws / RECIPE, recipe)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["digits"]["recipe"] = RECIPE
    write_yaml(ws / "params.yaml", params)
    for rule in WAIVED + WAIVED_LATER:  # signed by the session's solo key (an approver too)
        waive(ws, rule, "digits", "12 toy images are too few for this rule", EXPIRES, key=solo_trust.key)

    res = generate(
        Path(RECIPE), ws, CANDIDATES, GenerateParams(batch_size=6, shard_size=6, threads=1), **generate_kw
    )
    assert (res.images, res.shards) == (12, 2)
    filter_manifest(CANDIDATES, ws, FILTERED)
    report = validate_ws(ws)
    waived = [r.rule_id for r in report.results if r.status == "waived"]
    assert report.passed and waived == WAIVED, [(r.rule_id, r.status, r.message) for r in report.results]

    key = solo_trust.key
    (ws / "keys").mkdir()
    shutil.copy(solo_trust.public, ws / "keys" / solo_trust.public.name)
    commit_all(ws, "Tiny digits, validated")
    return Built(ws, key)


@pytest.fixture(scope="module")
def released(base: Built, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``base`` with digits 1.0.0 released. Shared: tests must not change it (use ``released_copy``)."""
    ws = clone(base.ws, tmp_path_factory.mktemp("released") / "ws")
    record = release("digits", "1.0.0", ws, key=base.key)
    return Built(ws, base.key, record)


@pytest.fixture
def fresh(base: Built, tmp_path: Path) -> Path:
    return clone(base.ws, tmp_path / "ws")


@pytest.fixture
def released_copy(released: Built, tmp_path: Path) -> Path:
    return clone(released.ws, tmp_path / "ws")


def unchecked_members(data: bytes, shard: str, expected: object, rows: object) -> dict | None:
    """``shard_check.checked_members`` with release's check of the images switched off, as a synthreg
    that did not check them would sign a shard: its members by name, or None when it cannot be parsed.
    Patched into ``registry.releases.publish`` only, so verify's own checks still run."""
    import tarfile

    from registry.store.shards import scan

    try:
        return scan(data)[0]
    except (tarfile.TarError, EOFError):
        return None


def fix_checksums(data: bytearray, headers: range | list[int] | None = None) -> None:
    """Each ustar header of ``data`` (at ``headers``, else at every 512-byte boundary) given its right
    checksum again after an edit, as tarfile writes it: the fuzz tests reach past the checksum check."""
    for at in range(0, len(data), 512) if headers is None else headers:
        if data[at + 257 : at + 262] == b"ustar":
            h = data[at : at + 512]
            h[148:156] = b" " * 8
            data[at + 148 : at + 156] = b"%06o\0 " % sum(h)
