"""A release that travels (issue 9): released and pushed in clone A, pulled into a fresh `git clone` B
and verified there, through real DVC remotes (a local folder; S3 through dvc-s3 against moto's server
on 127.0.0.1); then the remote loses one object and another is corrupted, and a third clone's pull
names both and leaves nothing that looks valid. Plus the refusals: no remote, an unknown version, a
remote that refuses connections, missing credentials, uncommitted inputs, a foreign public key.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.records.release import Release
from registry.store import audit
from tests.registry.conftest import ACTOR, DVC, Built, clone, commit_all, folder, sh, strays, table_rows, tags

runner = CliRunner()
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def error_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("error: "))


def set_remote(ws: Path, url: str, **options: str) -> None:
    sh(ws, DVC, "remote", "modify", "storage", "url", url)
    for k, v in options.items():
        sh(ws, DVC, "remote", "modify", "storage", k, v)
    sh(ws, "git", "commit", "-q", "-m", "remote for this test", "--", ".dvc/config")


def release_in(ws: Path, key: Path, *extra: str) -> None:
    code, out = cli("release", "digits", "--version", "1.0.0", "--key", str(key), "-w", str(ws), *extra)
    assert code == 0, out


def git_clone(src: Path, dst: Path) -> Path:
    sh(src.parent, "git", "clone", "-q", str(src), str(dst))
    for k, v in {"user.name": ACTOR, "user.email": "b@example.org", "commit.gpgsign": "false"}.items():
        sh(dst, "git", "config", k, v)
    return dst


def flip(data: bytes, at: int = 700) -> bytes:
    """One byte flipped inside the first member's PNG (a tar ends in zero padding that nobody reads)."""
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def objects(ws: Path, version: str = "1.0.0") -> dict[str, str]:
    """relpath inside the release's data/ -> md5 (the DVC object id), from A's cache."""
    pointer = yaml.safe_load((folder(ws, version) / "data.dvc").read_text())
    oid = pointer["outs"][0]["md5"]
    listing = ws / ".dvc" / "cache" / "files" / "md5" / oid[:2] / oid[2:]
    return {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())}


def travel(a: Path, b: Path, key: Path) -> Release:
    """Release in A (pushed), pull into a fresh clone B, verify and check the log there."""
    release_in(a, key)
    git_clone(a, b)
    assert not (folder(b, "1.0.0") / "data").exists()  # DVC data is not in git
    pulled = runner.invoke(app, ["pull", "digits@1.0.0", "-w", str(b)])
    assert pulled.exit_code == 0, pulled.output
    out = pulled.stdout  # a slow pull's progress lines go to stderr
    record = Release.model_validate_json((folder(b, "1.0.0") / "release.json").read_text())
    assert out.strip().startswith("pulled digits@1.0.0 from storage ")
    assert out.strip().endswith(
        f"12 samples in {len(record.shards)} shards, signature and every file match what was signed; "
        "`synthreg verify digits@1.0.0` checks each image"
    )
    code, out = cli("verify", "digits@1.0.0", "-w", str(b))
    assert code == 0 and "digits@1.0.0: OK (12 samples in 2 shards)" in out, out
    code, out = cli("log", "--verify", "-w", str(b))
    assert code == 0 and "audit log: intact" in out, out
    return record


def damage_then_pull(a: Path, c: Path, delete: Callable[[str], None], corrupt: Callable[[str], None]) -> None:
    """Delete one shard's object on the remote and corrupt the other's; a fresh clone's pull names both,
    exits 1, and leaves neither in its workspace or cache; verify then fails naming them."""
    record = Release.model_validate_json((folder(a, "1.0.0") / "release.json").read_text())
    oids = objects(a)
    gone, bad = (s.path for s in record.shards)
    delete(oids[gone])
    corrupt(oids[bad])
    git_clone(a, c)
    code, out = cli("pull", "digits@1.0.0", "-w", str(c))
    line = error_line(out)
    assert code == 1, out
    assert line.startswith(
        "error: `dvc pull` of digits@1.0.0 from remote storage failed, nothing was checked out: "
    ) or line.startswith("error: `dvc pull` of digits@1.0.0 from remote storage "), line
    assert f"shard {Path(gone).name} is missing on the remote" in line, line
    assert f"shard {Path(bad).name} is damaged on the remote (its sha256 is not the signed one)" in line, line
    assert not (folder(c, "1.0.0") / "data").exists()  # nothing half-pulled in the workspace
    cache = c / ".dvc" / "cache" / "files" / "md5"
    assert not (cache / oids[bad][:2] / oids[bad][2:]).exists()  # the bad copy does not shadow a repair
    code, out = cli("verify", "digits@1.0.0", "-w", str(c))
    assert code == 1
    assert "problem: data/manifest.parquet is missing; run `dvc checkout` or `dvc pull`" in out
    assert "digits@1.0.0: FAILED" in out


# --- a local-folder remote -----------------------------------------------------------------------------


def test_a_release_travels_through_a_local_folder_remote(base: Built, tmp_path: Path):
    a = clone(base.ws, tmp_path / "a")
    remote = tmp_path / "remote"
    set_remote(a, str(remote))
    travel(a, tmp_path / "b", base.key)

    def path(oid: str) -> Path:
        return remote / "files" / "md5" / oid[:2] / oid[2:]

    def corrupt(oid: str) -> None:
        p = path(oid)
        p.chmod(0o644)
        p.write_bytes(flip(p.read_bytes()))

    damage_then_pull(a, tmp_path / "c", lambda oid: path(oid).unlink(), corrupt)


def test_pull_shows_files_fetched_then_files_checked(
    base: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off a terminal, plain lines on stderr (tests/registry/test_progress.py): the release's files in the
    DVC cache while DVC fetches (manifest, its flat copy, 2 shards), then the signed files checked
    (counted in images, as verify counts); stdout keeps only the result."""
    a = clone(base.ws, tmp_path / "a")
    set_remote(a, str(tmp_path / "remote"))
    release_in(a, base.key)
    b = git_clone(a, tmp_path / "b")
    monkeypatch.setenv("SYNTHREG_PROGRESS_SECONDS", "0")  # every update becomes a line
    res = runner.invoke(app, ["pull", "digits@1.0.0", "-w", str(b)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        f"pulled digits@1.0.0 from storage {tmp_path / 'remote'}: 12 samples in 2 shards, signature and "
        "every file match what was signed; `synthreg verify digits@1.0.0` checks each image"
    ]
    err = res.stderr.splitlines()
    fetched = [ln for ln in err if ln.startswith("pull: ")]
    verified = [ln for ln in err if ln.startswith("verify: ")]
    assert fetched[0].startswith("pull: 0/4 (0%)") and fetched[-1].startswith("pull: 4/4 (100%)")
    counts = [int(ln.split()[1].split("/")[0]) for ln in fetched]
    assert counts == sorted(counts)  # never backwards
    assert verified[-1].startswith("verify: 12/12 (100%)")
    assert err.index(fetched[-1]) < err.index(verified[0])  # fetched, then checked


def test_a_corrupt_object_alone_is_pulled_then_caught_and_removed(base: Built, tmp_path: Path):
    """DVC does not re-hash what a local remote sends, so the pull itself succeeds; verify catches the
    shard, which is removed from the workspace and the cache, and a verify afterwards names it."""
    a = clone(base.ws, tmp_path / "a")
    remote = tmp_path / "remote"
    set_remote(a, str(remote))
    release_in(a, base.key)
    record = Release.model_validate_json((folder(a, "1.0.0") / "release.json").read_text())
    bad = record.shards[0].path
    oid = objects(a)[bad]
    obj = remote / "files" / "md5" / oid[:2] / oid[2:]
    obj.chmod(0o644)
    obj.write_bytes(flip(obj.read_bytes()))
    c = git_clone(a, tmp_path / "c")
    code, out = cli("pull", "digits@1.0.0", "-w", str(c))
    assert code == 1
    assert error_line(out) == (
        f"error: digits@1.0.0 did not verify after the pull: shard {Path(bad).name} does not match its "
        "signed sha256 (removed 1 bad file(s) from the workspace and the DVC cache); push it again from a "
        "workspace where `synthreg verify digits@1.0.0` passes (`dvc push releases/digits/1.0.0/data.dvc`), "
        "then pull again"
    )
    assert not (folder(c, "1.0.0") / "data" / bad).exists()
    assert not (c / ".dvc/cache/files/md5" / oid[:2] / oid[2:]).exists()
    code, out = cli("verify", "digits@1.0.0", "-w", str(c))
    assert code == 1 and f"problem: shard {Path(bad).name} is missing" in out


# --- S3 (dvc-s3) against moto's server on 127.0.0.1 ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    """(endpoint URL, boto3 client) of a moto S3 server on a free loopback port, with a bucket `releases`."""
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed (pip install -e '.[s3,dev]')")
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    import boto3

    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="releases")
    try:
        yield endpoint, client
    finally:
        server.stop()


def test_a_release_travels_through_s3(base: Built, tmp_path: Path, s3):
    endpoint, client = s3
    a = clone(base.ws, tmp_path / "a")
    set_remote(a, "s3://releases/store", endpointurl=endpoint)
    travel(a, tmp_path / "b", base.key)

    def key(oid: str) -> str:
        return f"store/files/md5/{oid[:2]}/{oid[2:]}"

    def corrupt(oid: str) -> None:
        body = client.get_object(Bucket="releases", Key=key(oid))["Body"].read()
        client.put_object(Bucket="releases", Key=key(oid), Body=flip(body))

    def delete(oid: str) -> None:
        client.delete_object(Bucket="releases", Key=key(oid))

    damage_then_pull(a, tmp_path / "c", delete, corrupt)


def test_a_remote_that_refuses_connections_is_one_clear_line(base: Built, tmp_path: Path, monkeypatch):
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed (pip install -e '.[s3,dev]')")
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    a = clone(base.ws, tmp_path / "a")
    set_remote(a, "s3://releases/store", endpointurl=f"http://127.0.0.1:{free_port()}")  # nobody listens
    head = sh(a, "git", "rev-parse", "HEAD")
    # Fails fast (registry.releases.remote.FAST_FAIL: measured ~3.5 s against DVC's default ~6.4 s); timings
    # are
    # not asserted here (CONTRIBUTING: speed is measured, not tested).
    code, out = cli("release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(a))
    assert code == 1
    line = error_line(out)
    assert line.startswith("error: `dvc push` to remote storage s3://releases/store failed: "), line
    assert "Could not connect to the endpoint URL" in line, line
    assert_nothing_released(a, head)


def test_missing_credentials_are_one_clear_line(base: Built, tmp_path: Path, s3, monkeypatch):
    endpoint, _ = s3
    a = clone(base.ws, tmp_path / "a")
    set_remote(a, "s3://releases/store", endpointurl=endpoint)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    head = sh(a, "git", "rev-parse", "HEAD")
    code, out = cli("release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(a))
    assert code == 1
    line = error_line(out)
    assert line.startswith("error: `dvc push` to remote storage s3://releases/store failed: "), line
    assert "credentials" in line.lower(), line
    assert_nothing_released(a, head)


def assert_nothing_released(ws: Path, head: str) -> None:
    assert not folder(ws, "1.0.0").exists() and strays(ws) == []
    assert tags(ws) == [] and sh(ws, "git", "rev-parse", "HEAD") == head
    assert sh(ws, "git", "status", "--porcelain", "--", "releases", "keys") == ""


# --- refusals and what a release commit holds ----------------------------------------------------------


def test_no_remote_is_refused_with_the_two_lines_to_add_one(base: Built, tmp_path: Path):
    a = clone(base.ws, tmp_path / "a")
    sh(a, DVC, "remote", "remove", "storage")
    commit_all(a, "no remote")
    head = sh(a, "git", "rev-parse", "HEAD")
    code, out = cli("release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(a))
    assert code == 1
    assert error_line(out) == (
        f"error: workspace {a} has no default DVC remote to push the release to; add one with "
        "`dvc remote add -d storage /path/or/s3://bucket` and `git commit .dvc/config`; or pass --no-push "
        "to keep the data in this workspace's DVC cache only"
    )
    assert_nothing_released(a, head)

    release_in(a, base.key, "--no-push")
    record = Release.model_validate_json((folder(a, "1.0.0") / "release.json").read_text())
    assert record.no_push and record.remote is None
    event = [e for e in audit.read(a) if e.kind == "release"][-1]
    assert event.details["no_push"] is True and event.details["remote"] is None
    code, out = cli("show", "digits@1.0.0", "-w", str(a))
    assert ["data remote", "not pushed (--no-push)"] in table_rows(out)


def test_derive_pushes_too_or_says_no_push(released_copy: Path, released: Built):
    ws = released_copy
    sh(ws, DVC, "remote", "remove", "storage")
    commit_all(ws, "no remote")
    record = Release.model_validate_json((folder(ws, "1.0.0") / "release.json").read_text())
    sample = duckdb_first_sample(folder(ws, "1.0.0") / "data/manifest.parquet")
    args = ["derive", "digits@1.0.0", "--version", "1.0.1", "--exclude-sample", sample, "--reason", "asked"]
    args += ["--key", str(released.key), "-w", str(ws)]
    code, out = cli(*args)
    assert code == 1 and "has no default DVC remote to push the release to" in error_line(out)
    assert not folder(ws, "1.0.1").exists() and tags(ws) == ["digits@v1.0.0"]
    code, out = cli(*args, "--no-push")
    assert code == 0, out
    derived = Release.model_validate_json((folder(ws, "1.0.1") / "release.json").read_text())
    assert derived.no_push and derived.remote is None and record.remote is not None


def duckdb_first_sample(manifest: Path) -> str:
    import duckdb

    return duckdb.sql(f"SELECT min(sample_id) FROM '{manifest}'").fetchall()[0][0]


def test_pull_of_an_unknown_version(released: Built):
    code, out = cli("pull", "digits@9.9.9", "-w", str(released.ws))
    assert code == 1
    assert error_line(out) == "error: digits@9.9.9 is not released; see `synthreg list`"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("params.yaml", None),
        ("recipes/digits.yaml", None),
        ("waivers", None),  # a signed waiver in waivers/
        ("policies/packs/default.yaml", None),
        ("policies/licenses.yaml", None),
        ("dvc.lock", "schema: '2.0'\nstages: {}\n"),  # absent here: a new file is uncommitted too
    ],
)
def test_uncommitted_inputs_are_refused(fresh: Path, base: Built, path: str, text: str | None):
    head = sh(fresh, "git", "rev-parse", "HEAD")
    if path == "waivers":
        path = sorted(p.relative_to(fresh).as_posix() for p in (fresh / "waivers").glob("*.dsse.json"))[0]
    target = fresh / path
    target.write_text(text if text is not None else target.read_text() + "# an uncommitted edit\n")
    [dirty] = sh(fresh, "git", "status", "--porcelain", "--untracked-files=all").split()[1:]
    assert dirty == path
    code, out = cli("release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(fresh))
    assert code == 1
    assert error_line(out) == (
        f"error: uncommitted changes to {dirty}, which the release depends on; commit them (`git add {dirty} "
        "&& git commit`) so the release's source commit holds the state released, then release again"
    )
    assert_nothing_released(fresh, head)


def test_a_manifest_recorded_nowhere_is_refused(fresh: Path, base: Built):
    sh(fresh, "git", "rm", "-q", "--cached", "data/digits/filtered/manifest.parquet")
    sh(fresh, "git", "commit", "-q", "-m", "manifest out of git")
    code, out = cli("release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(fresh))
    assert code == 1
    assert error_line(out) == (
        "error: the filtered manifest data/digits/filtered/manifest.parquet is recorded neither in HEAD's "
        "dvc.lock nor in git, so the release could not name the commit it was made from; make it with "
        "`dvc repro` and commit dvc.lock, then release again"
    )


def test_the_release_commit_holds_the_public_key_and_names_its_source(
    fresh: Path, base: Built, tmp_path, solo_trust
):
    # The public key was never committed: the release adds and commits it (a convenience copy: what is
    # trusted is the pinned trust root), so a clone holds the key that signed.
    pub = f"keys/{solo_trust.keyid}.pub.json"
    sh(fresh, "git", "rm", "-q", "--cached", pub)
    sh(fresh, "git", "commit", "-q", "-m", "public key out of git")
    (fresh / pub).unlink()
    source = sh(fresh, "git", "rev-parse", "HEAD")
    release_in(fresh, base.key)
    record = Release.model_validate_json((folder(fresh, "1.0.0") / "release.json").read_text())
    assert record.git_commit == source
    tagged = sh(fresh, "git", "rev-list", "-n", "1", "digits@v1.0.0")
    assert sh(fresh, "git", "rev-parse", f"{tagged}~1") == source
    changed = sh(fresh, "git", "show", "--name-only", "--format=", tagged).splitlines()
    assert pub in changed and any(c.startswith("audit/events/") for c in changed)
    assert sh(fresh, "git", "status", "--porcelain") == ""
    code, out = cli("show", "digits@1.0.0", "-w", str(fresh))
    rows = table_rows(out)
    assert ["released from commit", source] in rows and ["tag digits@v1.0.0", tagged] in rows
    b = git_clone(fresh, tmp_path / "b")
    code, out = cli("pull", "digits@1.0.0", "-w", str(b))
    assert code == 0, out


def test_pull_in_a_clone_then_dvc_pull_of_the_pipeline_outputs(base: Built, tmp_path: Path):
    """What release pushes besides the release: nothing here (the toy workspace commits its data to git);
    the dvc.lock case is covered by tests/test_pipeline_dvc.py."""
    a = clone(base.ws, tmp_path / "a")
    set_remote(a, str(tmp_path / "remote"))
    release_in(a, base.key)
    proc = subprocess.run([DVC, "status", "-c", "-q"], cwd=a, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_pipeline_outputs_a_release_pushes_are_every_datasets_cached_outputs(tmp_path: Path):
    """dvc.yaml's `foreach: ${datasets}` stages expand per dataset: a release of pets pushes pets'
    candidates and filtered manifest (cached), not its metrics or report (in git). Reading dvc.yaml as YAML
    saw only `data/${key}/...` and pushed nothing, so a clone's `dvc pull` found the candidates missing."""
    from registry.releases.remote import pipeline_outputs
    from tests.conftest import REPO

    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["pets"] = params["datasets"]["digits"] | {"recipe": "recipes/pets.yaml"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([DVC, "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    for stage in list(lock["stages"]):  # pets' lock entries, as digits' with the folder renamed
        if stage.endswith("@digits"):
            text = yaml.safe_dump(lock["stages"][stage]).replace("data/digits/", "data/pets/")
            lock["stages"][stage.replace("@digits", "@pets")] = yaml.safe_load(text)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert pipeline_outputs(tmp_path, "pets") == [
        "data/pets/candidates",
        "data/pets/filtered/manifest.parquet",
    ]
    assert pipeline_outputs(tmp_path, "digits") == [
        "data/digits/candidates",
        "data/digits/filtered/manifest.parquet",
    ]
