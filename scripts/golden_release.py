"""Make a small release through the `synthreg` CLI only, or compare two such release folders.

    python scripts/golden_release.py make OUT        # OUT/ws/releases/digits/1.0.0 (and OUT/keys)
    python scripts/golden_release.py compare A B     # exit 1, listing differences, unless equal
    python scripts/golden_release.py make OUT --crash-at after:rename   # kill the release at that step

The last form leaves an interrupted publish behind, journalled by the code that ran it: the fixture
``tests/registry/fixtures/interrupted-publish-0.1.tar.gz`` was made so by the code before issue 18's
move (``tests/registry/test_journal.py`` checks that ``synthreg doctor --repair`` of today finishes it).

Issue 18 moved every module of ``registry/``; the move had to leave what a release writes unchanged
(``golden-release-0.1``, made at 0a35b42 and in git history, compared equal until issue 19). Issue 19
changed what a digits release says on purpose: the stroke rules moved to the digits pack (rule order: the
generic pack's first; their pack id ``synthreg-digits``), the leakage rule says its digests were
"declared, not verified", and the card says so in a line. With those, and the deliberate changes of issues
21 and 23 (the HTML banner, styles and not-run section; the card's config name), 0.1 and a release of
issue 19's code differed in nothing else; ``golden-release-0.2`` was made then. ``0.3`` (in git history;
the baseline until issue 23's flat manifest change) differs from 0.2 only in what issues 21 and 23 added
to the record: the filter settings (``filter``: thresholds, scoring domain, checks not run) and the flat
manifest's digest (``flat_manifest_sha256``), with their lines in the card and Croissant, and the HTML
report's filter and marking sections. ``0.4`` (the baseline since) differs from 0.3 only by issue 23's
released shard paths: the flat manifest's ``shard`` column names each row's released file
(``data/shards/<sha256>.tar``, the path inside the release folder) instead of the workspace path, so
``data/manifest-flat.parquet`` and the digest the record, Croissant and the signature give it changed, and
the card (its Dataset Structure paragraph and file table) and Croissant (the file's description) say so;
``data/manifest.parquet`` and every shard are byte for byte as in 0.3. ``0.5`` (the baseline since)
differs from 0.4 only by issue 21's domain checks and reviewer's report: the record's ``filter.not_checked``
and the card's lines now name the two checks tiny-digits cannot run (near-duplicates by embedding, the
CLIP score), and the HTML report gained the sections "signatures and approvals" (under the releaser's
trust root, named by its path, which the comparison masks), "filter checks not run" lines and "models
trained on this dataset"; the manifest, the flat manifest and every shard are byte for byte as in 0.4.
``0.6`` (the baseline since) differs from 0.5 only in the manifests' two float scores of the digits
domain, ``identity_confidence`` and ``nn_distance``: they are rounded to 6 decimals (computed in float64),
because numpy's exp and a BLAS kernel's sums differ in the last bits between CPUs (0.5, made on another
machine, differed from a release made on an AMD EPYC with AVX2 only there); every shard, and every other
file as the comparison reads it, is as in 0.5.
The maker drives only the command line (no library import), so the same script runs on the code before
and after a change. The comparison is
file by file, byte for byte, except what differs by nature between two runs: signatures, key ids, times,
git commits and what is derived from them (the envelope, sign-offs and the digests of files that embed a
time). JSON files are compared with those fields masked; the HTML report and PROV with times masked; every
other file (the manifest, every shard, the card) exactly."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MASK = "<masked>"
# Fields whose values differ between two runs of the same release (time, signer, commit, and digests of
# files that hold one of those).
VOLATILE = {
    "created_at",
    "time",
    "git_commit",
    "keyid",
    "sig",
    "payload",
    "actor",
    "checkpoint",
    "policy_report_sha256",
    "sha256",
    "statement_sha256",
    "hash",
    "prev_hash",
    "dateCreated",
    "datePublished",
    "generated_at",
    "started",
    "finished",
    "seq",
}
TIMES = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}| UTC)?")
HEX = re.compile(r"[0-9a-f]{12,64}")  # digests, key ids (also cut to 16 or 12 characters)
STAMP = re.compile(r"\d{8}T\d{6,}")  # a waiver file's time
OTHER = [
    (re.compile(r"seconds \d+(\.\d+)?"), "seconds " + MASK),
    (re.compile(r"storage /\S+"), "storage " + MASK),
    # The report's signatures section names the releaser's trust root file, a path on their machine.
    (re.compile(r"Trust root: <code>[^<]*</code>"), "Trust root: <code>" + MASK + "</code>"),
    (re.compile(r"<wbr>[0-9a-f]+"), "<wbr>" + MASK),
    # The card's `datasets` config name ends in the manifest digest's first 16 hex characters (issue 23).
    (re.compile(r"- config_name: \S+"), "- config_name: " + MASK),
    # The report's lineage table dates each version by the day it was released: the golden release was
    # made on another day (a bare date, which TIMES, needing a time of day, leaves alone).
    (re.compile(r"(<td>[^<@]+@\d+\.\d+\.\d+</td><td>)\d{4}-\d{2}-\d{2}(</td>)"), r"\1" + MASK + r"\2"),
]


def _text(s: str) -> str:
    for pattern, repl in OTHER:
        s = pattern.sub(repl, s)
    return HEX.sub(MASK, STAMP.sub(MASK, TIMES.sub(MASK, s)))


def sh(cwd: Path, *cmd: str, env: dict | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def make(out: Path, crash_at: str | None = None) -> Path:
    import yaml

    out.mkdir(parents=True)
    ws, keys = out / "ws", out / "keys"
    ws.mkdir()
    env = {
        **os.environ,
        "SYNTHREG_TRUST": str(keys / "trust.yaml"),
        "SYNTHREG_SIGNING_KEY": str(keys / "solo.pem"),
        "HF_HUB_OFFLINE": "1",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    bindir = Path(sys.executable).parent
    synthreg, dvc = str(bindir / "synthreg"), str(bindir / "dvc")
    sh(ws, "git", "init", "-q")
    for k, v in {
        "user.name": "Golden",
        "user.email": "golden@example.org",
        "commit.gpgsign": "false",
    }.items():
        sh(ws, "git", "config", k, v)
    sh(ws, dvc, "init", "-q")
    sh(ws, dvc, "config", "core.analytics", "false")
    sh(ws, dvc, "remote", "add", "-q", "-d", "storage", str(out / "remote"))
    shutil.copytree(REPO / "generators/tiny_digits/model", ws / "generators/tiny_digits/model")
    for part in ("policies/packs/default.yaml", "policies/packs/digits.yaml", "policies/licenses.yaml"):
        (ws / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / part, ws / part)
    recipe = yaml.safe_load((REPO / "recipes/digits.yaml").read_text())
    recipe["generator"]["path"] = "generators/tiny_digits/model"
    recipe.update(identities=["1", "4", "7"], images_per_identity=4, steps=8)
    (ws / "recipes").mkdir()
    (ws / "recipes/digits.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["digits"]["recipe"] = "recipes/digits.yaml"
    params.setdefault("generate", {}).update(batch_size=6, shard_size=6, threads=1)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(
        ws,
        synthreg,
        "keygen",
        "--key",
        str(keys / "solo.pem"),
        "--name",
        "Golden",
        "--trust",
        str(keys / "trust.yaml"),
        env=env,
    )
    for rule in (
        "bias.requested-balance",
        "bias.observed-collapse",
        "quality.identity-consistency",
        "quality.accepted-share",
    ):
        sh(
            ws,
            synthreg,
            "waive",
            rule,
            "--scope",
            "digits",
            "--expires",
            "2099-12-31",
            "--reason",
            "12 toy images are too few for this rule",
            env=env,
        )
    sh(ws, synthreg, "generate", "recipes/digits.yaml", env=env)
    sh(ws, synthreg, "filter", "data/digits/candidates", env=env)
    sh(ws, synthreg, "validate", "data/digits/filtered", env=env)
    (ws / ".gitignore").write_text("/generators/\n")  # the weights: read, never released (a small fixture)
    sh(ws, "git", "add", "-A", env=env)
    sh(ws, "git", "commit", "-q", "-m", "golden: validated", env=env)
    if crash_at:
        proc = subprocess.run(
            [synthreg, "release", "digits", "--version", "1.0.0"],
            cwd=ws,
            env={**env, "SYNTHREG_CRASH_AT": crash_at},
            capture_output=True,
        )
        if proc.returncode != -9:
            sys.exit(f"the release was to be killed at {crash_at}, but it exited {proc.returncode}")
    else:
        sh(ws, synthreg, "release", "digits", "--version", "1.0.0", env=env)
    return ws / "releases/digits/1.0.0"


def _mask(value):
    if isinstance(value, dict):
        return {_text(k): MASK if k in VOLATILE else _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return _text(value)
    return value


def normal(path: Path) -> bytes:
    """What must be equal between two runs: masked JSON, masked text for the report and PROV."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return json.dumps(_mask(json.loads(data)), indent=1, sort_keys=True).encode()
    if path.name in ("report.html", "card.md", "README.md", "policy-report.md", "data.dvc"):
        text = data.decode()
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64," + MASK, text)
        if path.name == "data.dvc":
            text = re.sub(r"(md5|size|nfiles): .*", r"\1: " + MASK, text)
        return _text(text).encode()
    return data


def compare(a: Path, b: Path) -> list[str]:
    files = lambda root: {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    fa, fb = files(a), files(b)
    diffs = [f"only in {a}: {f}" for f in sorted(fa - fb)] + [f"only in {b}: {f}" for f in sorted(fb - fa)]
    shards = lambda root: sorted(p.read_bytes() for p in (root / "data/shards").glob("*.tar"))  # noqa: E731
    for rel in sorted(fa & fb):
        if rel.startswith("data/shards/"):
            continue  # named by their sha256, compared as a set below
        if normal(a / rel) != normal(b / rel):
            diffs.append(f"differs: {rel}")
    if shards(a) != shards(b):
        diffs.append("differs: data/shards/*.tar (as a set of byte strings)")
    return diffs


if __name__ == "__main__":
    if len(sys.argv) in (3, 5) and sys.argv[1] == "make":
        print(
            make(
                Path(sys.argv[2]), sys.argv[4] if len(sys.argv) == 5 and sys.argv[3] == "--crash-at" else None
            )
        )
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        found = compare(Path(sys.argv[2]), Path(sys.argv[3]))
        print("\n".join(found) or "equal (signatures, key ids, times and commits masked)")
        sys.exit(1 if found else 0)
    else:
        sys.exit(__doc__)
