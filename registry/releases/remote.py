"""Remote storage: what a release adds goes to the workspace's default DVC remote, and a clone gets
exactly one release back from it.

    require(ws, no_push)          # -> "storage s3://bucket/path"; None with --no-push; RemoteError if none
    push_release(ws, "digits", "1.0.0", remote, derived=False)
                                  # `dvc push` of the release's data (and, for a release, the outputs
                                  #  of the pipeline stages it was made from)
    pull(ws, "digits@1.0.0")      # `dvc pull releases/digits/1.0.0/data.dvc`, then verify every byte

Any DVC remote works (local folder, S3, GCS, Azure, SSH): synthreg runs the ``dvc`` CLI, so the
remote's configuration, credentials (``.dvc/config.local``, the cloud's own environment) and plugins
(``dvc-s3``...) are DVC's own. Transfers fail fast: a remote that refuses connections is an error
within seconds, not after the default retries of DVC's S3 client (``FAST_FAIL``).

A pull never leaves damaged data looking valid. After ``dvc pull`` the release is verified
(signature, binding, and every file whole against its signed sha256: ``verify(images=False)``; the
per-image check inside the shards is ``synthreg verify``'s); a manifest or shard that is missing or
does not match its signed sha256 is removed from the workspace and from the local DVC cache (so that
a repaired remote is fetched again rather than shadowed by the cached bad copy), and the error names
it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from registry.core import vcs
from registry.core.errors import RemoteError
from registry.records.release import Release
from registry.store.releases import RELEASES, load_release, parse_ref

HOWTO = "add one with `dvc remote add -d storage /path/or/s3://bucket` and `git commit .dvc/config`"

# Set only where the user has not: botocore's own attempts and the instance-metadata probe (which a
# machine without credentials otherwise waits on); s3fs's retry loop is left as DVC sets it. Measured
# with `dvc push` against a closed port on 127.0.0.1 (2 busy cores): an error in ~3.5 s, against ~6.4 s
# with botocore's defaults (tests/registry/test_remote.py::test_a_remote_that_refuses_connections...).
FAST_FAIL = {
    "AWS_MAX_ATTEMPTS": "1",
    "AWS_RETRY_MODE": "standard",
    "AWS_METADATA_SERVICE_TIMEOUT": "1",
    "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "1",
}


@dataclass(frozen=True)
class PullResult:
    ref: str
    remote: str
    samples: int
    shards: int


def _dvc(ws: Path, *args: str, poll: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` in ``ws``, its output captured, failing fast on an unreachable remote
    (``FAST_FAIL``, unless the environment says otherwise); ``poll()`` while it runs."""
    return vcs.run_dvc(ws, *args, env=FAST_FAIL, poll=poll)


def _dvc_error(proc: subprocess.CompletedProcess[str]) -> str:
    """DVC's own error, on one line: its ``ERROR:`` lines (the last names the cause), else its output."""
    text = (proc.stderr + "\n" + proc.stdout).strip()
    errors = [line.removeprefix("ERROR:").strip() for line in text.splitlines() if line.startswith("ERROR")]
    found = errors or [line.strip() for line in text.splitlines() if line.strip()]
    return " - ".join(dict.fromkeys(found))[:600] or f"exit status {proc.returncode}"


def _redact(url: str) -> str:
    """A URL without any user:password part (records and messages are committed and shown)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=host))


def default_remote(ws: Path) -> tuple[str, str] | None:
    """(name, URL) of the workspace's default DVC remote, from every DVC config level; None if none."""
    from dvc.config import Config, ConfigError

    try:
        config = Config(dvc_dir=str(ws / ".dvc"))
    except ConfigError as e:
        raise RemoteError(f"the DVC configuration of {ws} cannot be read: {e}; fix .dvc/config") from None
    name = config["core"].get("remote")
    if not name:
        return None
    remote = config["remote"].get(name)
    if remote is None:
        raise RemoteError(
            f"the default DVC remote {name!r} is not defined; {HOWTO} (or `dvc remote default NAME`)"
        )
    return name, _redact(str(remote["url"]))


def require(ws: Path, no_push: bool) -> str | None:
    """The default remote as ``"NAME URL"``, checked before anything is written; None with ``no_push``."""
    if no_push:
        return None
    found = default_remote(ws)
    if found is None:
        raise RemoteError(
            f"workspace {ws} has no default DVC remote to push the release to; {HOWTO}; "
            "or pass --no-push to keep the data in this workspace's DVC cache only"
        )
    return " ".join(found)


def pipeline_outputs(ws: Path, dataset: str) -> list[str]:
    """The cached outputs ``dvc.lock`` records under ``data/<dataset>/``: what a release was made from.
    Outputs with ``cache: false`` are in git, not in the cache, and are left out."""
    lock = ws / "dvc.lock"
    if not lock.is_file():
        return []
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError as e:
        raise RemoteError(f"dvc.lock is not valid YAML ({e}); restore it from git") from None
    ours = f"data/{dataset}/"
    cached = dvc_cached_outputs(ws)
    return sorted(
        {
            o["path"]
            for s in stages.values()
            for o in s.get("outs", [])
            if o.get("path", "").startswith(ours) and o["path"] in cached
        }
    )


def dvc_cached_outputs(ws: Path) -> set[str]:
    """Paths of the outputs dvc.yaml declares with the cache on (the default), as DVC itself resolves
    them: its templating (``foreach: ${datasets}``) expands ``data/${key}/candidates`` into every
    dataset's folder, which reading dvc.yaml as YAML never did (so from issue 19 on, a release pushed no
    pipeline output and a clone's ``dvc pull`` found the candidates missing)."""
    if not (ws / "dvc.yaml").is_file():
        return set()
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(ws)) as repo:
            return {
                Path(str(o.def_path)).as_posix() for s in repo.index.stages for o in s.outs if o.use_cache
            }
    except DvcException as e:
        raise RemoteError(f"dvc.yaml cannot be read ({e}); fix it (`dvc status` names the problem)") from None


def push(ws: Path, targets: list[str], remote: str) -> None:
    proc = _dvc(ws, "push", *targets)
    if proc.returncode != 0:
        raise RemoteError(
            f"`dvc push` to remote {remote} failed: {_dvc_error(proc)}; check that the remote is reachable "
            "and its credentials are set (`dvc remote list`, `dvc push` by hand), then try again"
        )


def push_release(ws: Path, name: str, version: str, remote: str, *, derived: bool) -> None:
    """Push the data of release ``name@version``, and for a release made from the workspace (not
    ``derived``) the pipeline outputs ``dvc.lock`` records for its dataset, so a clone's ``dvc pull``
    finds them too."""
    outputs = [] if derived else pipeline_outputs(ws, name)
    if outputs:
        # A call of its own: dvc 3.67 given `X.dvc` first and dvc.yaml outputs after it, whose objects
        # overlap (the release's shards are the candidates'), pushed only X's and reported success.
        push(ws, outputs, remote)
    push(ws, [(RELEASES / name / version / "data.dvc").as_posix()], remote)


def pull(
    ws: Path,
    ref: str,
    progress: Callable[..., None] | None = None,
    verify_progress: Callable[..., None] | None = None,
) -> PullResult:
    """Fetch exactly one release (its ``data.dvc``) from the default remote, then verify it byte by byte.

    ``progress(files in the local DVC cache, files of the release)`` while DVC fetches (counted every
    ``vcs.POLL_SECONDS``; files cached before count as fetched), then ``verify_progress(images checked,
    images)`` per shard as ``verify`` reports it.

    Raises RemoteError naming what is missing or damaged, once the damaged copies are removed from the
    workspace and the DVC cache (see the module doc).
    """
    from registry.releases.verify import verify

    name, version = parse_ref(ref)
    if version is None:
        raise RemoteError(f"give the version to pull: {name}@X.Y.Z (see `synthreg list`)")
    record = load_release(ws, f"{name}@{version}")  # an unknown version is refused before any transfer
    found = default_remote(ws)
    if found is None:
        raise RemoteError(f"workspace {ws} has no default DVC remote to pull {name}@{version} from; {HOWTO}")
    remote = " ".join(found)
    folder = RELEASES / name / version
    again = (
        f"push it again from a workspace where `synthreg verify {name}@{version}` passes "
        f"(`dvc push {folder.as_posix()}/data.dvc`), then pull again"
    )
    pointer = (folder / "data.dvc").as_posix()
    if progress is None:
        proc = _dvc(ws, "pull", pointer)
    else:
        signed = _signed_subjects(ws / folder) or {"manifest.parquet": record.manifest_sha256}
        files = len(signed | {s.path: s.sha256 for s in record.shards})
        with _cache(ws) as cached:

            def fetched() -> None:
                oids = _object_ids(ws / folder / "data.dvc", cached)  # readable once DVC has the listing
                progress(sum(cached(o).is_file() for o in oids.values()), len(oids) or files)

            fetched()
            proc = _dvc(ws, "pull", pointer, poll=fetched)
        if proc.returncode == 0:  # all of it is here: the last count, whatever the last poll saw
            progress(files, files)
    if proc.returncode != 0:
        # DVC checks out nothing of a folder with an object missing; say which, from what was fetched.
        problems = _check_cache(ws, folder, record)
        if problems:
            raise RemoteError(
                f"`dvc pull` of {name}@{version} from remote {remote} failed, nothing was checked out: "
                f"{_first(problems)}; {again}"
            )
        raise RemoteError(
            f"`dvc pull` of {name}@{version} from remote {remote} failed: {_dvc_error(proc)}; check that the "
            "remote is reachable and its credentials are set (`dvc remote list`), then pull again"
        )
    # Every file whole against its signed sha256 (the transfer's integrity and authenticity); the
    # per-image check inside the shards is `synthreg verify`'s, which the user runs next.
    result = verify(ws, f"{name}@{version}", images=False, progress=verify_progress)
    if result.ok:
        return PullResult(result.ref, remote, result.samples, result.shards)
    removed = _discard(ws, folder, result.damaged)
    gone = f" (removed {len(removed)} bad file(s) from the workspace and the DVC cache)" if removed else ""
    raise RemoteError(f"{result.ref} did not verify after the pull: {_first(result.problems)}{gone}; {again}")


def _first(problems: list[str], n: int = 3) -> str:
    return "; ".join(problems[:n]) + (f" (and {len(problems) - n} more)" if len(problems) > n else "")


def _check_cache(ws: Path, folder: Path, record: Release) -> list[str]:
    """What the local DVC cache lacks or holds damaged of a release's files, damaged objects deleted
    (DVC does not re-hash what a remote sends unless told to; the record's sha256 are checked here)."""
    from registry.core.digests import sha256_file

    signed = _signed_subjects(ws / folder) | {
        record.manifest_path.removeprefix("data/"): record.manifest_sha256
    }
    signed |= {s.path: s.sha256 for s in record.shards}
    problems = []
    with _cache(ws) as cached:
        for rel, oid in sorted(_listing(ws, folder, cached).items()):
            what = f"shard {Path(rel).name}" if rel.startswith("shards/") else f"data/{rel}"
            obj = cached(oid)
            if not obj.is_file():
                problems.append(f"{what} is missing on the remote")
            elif sha256_file(obj) != signed.get(rel):
                obj.unlink()  # its folder is writable; the next pull fetches it again
                problems.append(f"{what} is damaged on the remote (its sha256 is not the signed one)")
    return problems


def _signed_subjects(folder: Path) -> dict[str, str]:
    """relpath inside ``data/`` -> sha256 of every subject of the release's signed statement (e.g.
    ``manifest-flat.parquet``); empty when the envelope cannot be read (verify then says why)."""
    from registry.core.errors import SigningError
    from registry.trust.approvals import read_signed
    from registry.trust.signing import payload_of

    try:
        statement = json.loads(payload_of(read_signed(folder)[0]))
        return {
            s["name"].removeprefix("data/"): s["digest"]["sha256"]
            for s in statement["subject"]
            if s["name"].startswith("data/")
        }
    except (SigningError, ValueError, KeyError, TypeError):
        return {}


def _listing(ws: Path, folder: Path, cached: Callable[[str], Path]) -> dict[str, str]:
    """The release's ``.dir`` listing (relpath -> md5): from the cache, else straight from the remote (a
    failed fetch does not cache it); empty when neither can be read."""
    found = _object_ids(ws / folder / "data.dvc", cached)
    if found:
        return found
    from dvc.repo import Repo

    try:
        dir_oid = yaml.safe_load((ws / folder / "data.dvc").read_text())["outs"][0]["md5"]
        with Repo(str(ws)) as repo:
            odb = repo.cloud.get_remote_odb()
            listing = json.loads(odb.fs.cat_file(odb.oid_to_path(dir_oid)))
        return {e["relpath"]: e["md5"] for e in listing}
    except Exception:  # unreachable remote, no credentials, no listing: DVC's own error says it
        return {}


@contextlib.contextmanager
def _cache(ws: Path) -> Iterator[Callable[[str], Path]]:
    """A function from a DVC object id to its path in the workspace's local cache."""
    from dvc.repo import Repo

    with Repo(str(ws)) as repo:
        yield lambda oid: Path(repo.cache.local.oid_to_path(oid))


def _discard(ws: Path, folder: Path, damaged: list[str]) -> list[str]:
    """Remove each damaged file (relative to the release folder) from the workspace and its object from
    the local DVC cache; return those removed."""
    removed = []
    with _cache(ws) as cached:
        oids = _object_ids(ws / folder / "data.dvc", cached)
        for rel in damaged:
            targets = [ws / folder / rel]
            oid = oids.get(rel.removeprefix("data/"))
            if oid:
                targets.append(cached(oid))
            if any(p.exists() for p in targets):
                removed.append(rel)
            for p in targets:
                p.unlink(missing_ok=True)  # cache files are read-only, but their folder is not
    return removed


def _object_ids(pointer: Path, cached: Callable[[str], Path]) -> dict[str, str]:
    """relpath inside ``data/`` -> md5, from the ``.dir`` object ``data.dvc`` names (if it is cached)."""
    try:
        listing = cached(yaml.safe_load(pointer.read_text())["outs"][0]["md5"])
        return {e["relpath"]: e["md5"] for e in json.loads(listing.read_text())}
    except (OSError, ValueError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return {}
