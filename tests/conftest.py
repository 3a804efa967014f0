"""Shared fixtures: small real workspaces on tmp_path built from the repo's own model and recipe."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "generators" / "tiny_digits" / "model"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def small_recipe(**overrides) -> dict:
    """The default recipe, shrunk: 3 digits x 2 strokes, 4 images each, 8 DDIM steps."""
    recipe = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())
    recipe["generator"]["path"] = "model"
    recipe.update(identities=["1", "4", "7"], images_per_identity=4, steps=8)
    recipe.update(overrides)
    return recipe


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with a copy of the tiny-digits model at ``model/`` and ``recipe.yaml``."""
    shutil.copytree(MODEL, tmp_path / "model")
    write_yaml(tmp_path / "recipe.yaml", small_recipe())
    return tmp_path


@dataclass(frozen=True)
class TrustSetup:
    key: Path  # private key, outside every workspace
    trust: Path  # the pinned trust root
    keyid: str
    public: Path  # keys/<keyid>.pub.json as keygen wrote it


@pytest.fixture(scope="session", autouse=True)
def solo_trust(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustSetup]:
    """A pinned trust root outside every workspace, in solo mode, holding one ed25519 key with both roles,
    set as $SYNTHREG_TRUST and $SYNTHREG_SIGNING_KEY for the session (CLI subprocesses inherit them), so
    tests that do not care about approvals release in one step. Trust tests pass --trust/trust= their own."""
    from registry.trust.signing import keygen

    top = tmp_path_factory.mktemp("trust")
    r = keygen(top / "pub", top / "solo.pem", name="Solo Tester", trust=top / "trust.yaml")
    assert r.trust is not None
    saved = {k: os.environ.get(k) for k in ("SYNTHREG_TRUST", "SYNTHREG_SIGNING_KEY")}
    os.environ["SYNTHREG_TRUST"] = str(r.trust)
    os.environ["SYNTHREG_SIGNING_KEY"] = str(r.private)
    yield TrustSetup(r.private, r.trust, r.keyid, r.public)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]


def sign_by_hand(ws: Path, folder: Path, key: Path) -> None:
    """Sign a release folder laid out by hand (``release.json`` and ``data/``) as `synthreg release` does in
    solo mode: envelope and sign-off by ``key`` under the session's trust root; committed and tagged."""
    import json
    import subprocess

    from registry.records.release import Release
    from registry.records.signed import SIGNOFFS
    from registry.trust.approvals import ENVELOPE, make_signoff, releaser_roles
    from registry.trust.root import load_trust
    from registry.trust.signing import load_signer, payload_of, sign, statement

    record = Release.model_validate_json((folder / "release.json").read_text())
    subjects = {"data/manifest.parquet": record.manifest_sha256} | {
        f"data/{s.path}": s.sha256 for s in record.shards
    }
    if (folder / "report.html").is_file():  # an export laid out too: signed, as `release` signs it
        subjects["report.html"] = hashlib.sha256((folder / "report.html").read_bytes()).hexdigest()
    signer = load_signer(key)
    trust = load_trust(ws)
    entry = trust.signing_key(signer.public_key.keyid, "releaser")
    env = sign(statement(subjects, record.model_dump(mode="json")), signer)
    ref = f"{record.name}@{record.version}"
    signoffs = [make_signoff(ws, ref, payload_of(env), signer, entry, releaser_roles(trust, entry))]
    (folder / ENVELOPE).write_text(json.dumps(env, indent=2) + "\n")
    (folder / SIGNOFFS).write_text(json.dumps(signoffs, indent=2) + "\n")
    rel = folder.relative_to(ws).as_posix()
    for cmd in (["add", "-f", rel], ["commit", "-q", "-m", f"Release {ref}", "--", rel]):
        subprocess.run([*GIT, *cmd], cwd=ws, check=True, capture_output=True)
    subprocess.run([*GIT, "tag", f"{record.name}@v{record.version}"], cwd=ws, check=True)
