"""OpenLineage events (issue 23), checked against a real receiver and the OpenLineage JSON Schema.

A local HTTP receiver (``http.server`` on 127.0.0.1, a free port, in a thread) stands in for Marquez;
``OPENLINEAGE_URL`` points the client at it, the way a user would. The pipeline then runs through the CLI
on a small workspace (``build_base``): generate, filter, validate, release, derive, train, withdraw. Every
event received is validated against ``OpenLineage.json`` and every facet against the schema its
``_schemaURL`` names: OpenLineage's, vendored in ``fixtures/openlineage`` because the client ships none
(see the README there), or synthreg's own, shipped in ``registry/lineage/openlineage``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from typer.testing import CliRunner

from registry.cli import app
from registry.records.dataset import FILTER_FIELDS
from tests.conftest import REPO, TrustSetup, write_yaml
from tests.registry.conftest import CANDIDATES, FILTERED, build_base, commit_all

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "openlineage"
OURS = REPO / "registry" / "lineage" / "openlineage"
OL = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
# Data a facet carries as data: HTML, quotes, a shell substitution, a template, a path escape.
HOSTILE_REASON = "<script>alert('x')</script> \"; DROP TABLE runs; -- $(touch pwned) {{7*7}} ../../etc"
HOSTILE_ACTOR = '<b>Mallory</b> "O\'Brien" `touch pwned2` ${HOME}'
STAGES = ("generate", "filter", "validate", "release", "derive", "train", "withdraw")
SMALL_TRAIN = {
    "train_size": 32,
    "real_per_class": 2,
    "synthetic_share": 0.5,
    "epochs": 1,
    "batch_size": 16,
    "threads": 1,
    "seed": 3,
}


# --- the receiver -------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    events: list[dict] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    got = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.paths.append(self.path)
            got.events.append(json.loads(body))
            self.send_response(201)  # what Marquez answers
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield got
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_stray_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No openlineage.yml from the developer's home or working folder, no OPENLINEAGE_* from their shell."""
    for k in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


# --- the schema ---------------------------------------------------------------------------------------------


def _registry() -> Registry:
    docs = [json.loads(p.read_text()) for p in (FIXTURES / "facets").glob("*.json")]
    docs.append(json.loads((FIXTURES / "OpenLineage.json").read_text()))
    docs += [json.loads(p.read_text()) for p in OURS.glob("*.json")]
    return Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)


REGISTRY = _registry()


def _validator(ref: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": ref}, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _facets(event: dict) -> Iterator[tuple[str, str, dict]]:
    """(where, key, facet) for every facet of the event: run, job, and each dataset's three kinds."""
    for where in ("run", "job"):
        for key, facet in (event[where].get("facets") or {}).items():
            yield where, key, facet
    for side in ("inputs", "outputs"):
        for ds in event.get(side) or []:
            for kind in ("facets", "inputFacets", "outputFacets"):
                for key, facet in (ds.get(kind) or {}).items():
                    yield f"{side} {ds['name']} {kind}", key, facet


def check_event(event: dict) -> None:
    """The event against OpenLineage.json's RunEvent; each facet against its own schema, by the URL it
    names, and under the key that schema gives it. A facet whose schema is not shipped fails."""
    errors = [e.message for e in _validator(f"{OL}#/$defs/RunEvent").iter_errors(event)]
    assert not errors, errors
    for where, key, facet in _facets(event):
        url = facet["_schemaURL"]
        doc = url.partition("#")[0]
        try:
            contents = REGISTRY.contents(doc)
        except Exception:
            pytest.fail(f"{where} facet {key}: no schema shipped for {url}")
        assert key in contents.get("properties", {}), f"{where}: {key} is not the key {doc} defines"
        problems = [e.message for e in _validator(url).iter_errors(facet)]
        assert not problems, (where, key, problems)


def test_the_vendored_schemas_are_the_ones_the_client_emits():
    """Every facet class of the installed client names a schema vendored here (and OpenLineage.json is
    the spec version its events name), so the validation below checks what the client really sends."""
    import importlib
    import pkgutil

    import openlineage.client.generated as generated
    from openlineage.client.event_v2 import RunEvent

    assert RunEvent._get_schema().startswith(OL)
    missing = []
    for info in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"openlineage.client.generated.{info.name}")
        for obj in vars(module).values():
            get = getattr(obj, "_get_schema", None)
            if isinstance(obj, type) and obj.__module__ == module.__name__ and get is not None:
                url = get().partition("#")[0]
                if "DataQualityMetricsDatasetFacet" not in url:  # not sent; see the fixtures' README
                    try:
                        REGISTRY.contents(url)
                    except Exception:
                        missing.append(url)
    assert not missing, sorted(set(missing))


# --- the context manager alone (fast) -----------------------------------------------------------------------


def test_one_context_manager_sends_start_then_complete_or_fail(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """START, then COMPLETE (a typer.Exit(0) is a success too), or FAIL with the library's message; the
    exception goes on as it was. A file input is described once, by its sha256."""
    import typer

    from registry.core.digests import sha256_file
    from registry.core.errors import ReleaseError
    from registry.lineage.openlineage import File, stage

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "recipe.yaml").write_text("dataset: <b>x</b>\n")
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
    before = len(receiver.events)
    with pytest.raises(ReleaseError), stage("release", ws, "digits") as run:
        run.input(File(Path("recipe.yaml")))
        raise ReleaseError("digits@1.0.0 is released already: <b>pick another version</b>")
    with stage("generate", ws) as run:
        run.output(File(Path("recipe.yaml")))
    with pytest.raises(typer.Exit), stage("generate", ws):
        raise typer.Exit(0)
    new = receiver.events[before:]
    for event in new:
        check_event(event)
    assert [(e["job"]["name"], e["eventType"]) for e in new] == [
        ("release@digits", "START"),
        ("release@digits", "FAIL"),
        ("generate", "START"),
        ("generate", "COMPLETE"),
        ("generate", "START"),
        ("generate", "COMPLETE"),
    ]
    assert new[1]["run"]["facets"]["errorMessage"]["message"] == (
        "digits@1.0.0 is released already: <b>pick another version</b>"
    )
    assert new[0]["producer"].startswith("https://synthreg.dev/openlineage/producer/")
    assert new[1]["inputs"][0]["facets"]["dataSource"]["_producer"] == new[0]["producer"]
    version = new[1]["inputs"][0]["facets"]["version"]["datasetVersion"]
    assert version == sha256_file(ws / "recipe.yaml")
    assert new[2]["outputs"] == []  # declared once written
    assert new[3]["outputs"][0]["facets"]["version"]["datasetVersion"] == version
    assert len({e["run"]["runId"] for e in new}) == 3


def test_nothing_is_configured_without_variables_or_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from registry.lineage.openlineage import configured

    assert not configured()
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
    assert configured()
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert not configured()
    monkeypatch.delenv("OPENLINEAGE_DISABLED")
    monkeypatch.delenv("OPENLINEAGE_URL")
    (tmp_path / "openlineage.yml").write_text("transport: {type: console}\n")
    assert configured()


def test_the_namespace_is_the_git_origin_without_credentials(tmp_path: Path):
    from registry.lineage.openlineage.facets import workspace_namespace

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert workspace_namespace(tmp_path) == f"file://{socket.gethostname()}{tmp_path.resolve()}"
    origin = "https://bob:s3cret@git.example.org:8443/team/data.git?token=abc"
    subprocess.run(["git", "remote", "add", "origin", origin], cwd=tmp_path, check=True)
    assert workspace_namespace(tmp_path) == "https://git.example.org:8443/team/data.git"


# --- the pipeline, through the CLI --------------------------------------------------------------------------


@dataclass
class Piped:
    ws: Path
    key: Path
    events: list[dict]
    outputs: dict[str, str]  # stage -> what it printed
    errors: dict[str, str]  # stage -> stderr


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def piped(
    tmp_path_factory: pytest.TempPathFactory, solo_trust: TrustSetup, receiver: Receiver
) -> Iterator[Piped]:
    """A small workspace whose data is made again by the CLI, released, derived from, trained on and
    withdrawn, with OPENLINEAGE_URL pointing at the receiver."""
    top = tmp_path_factory.mktemp("openlineage")
    built = build_base(top, solo_trust)
    ws = built.ws
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["generate"].update(batch_size=6, shard_size=6, min_shards=1, threads=1)
    params["datasets"]["digits"]["train"].update(SMALL_TRAIN)
    write_yaml(ws / "params.yaml", params)
    shutil.rmtree(ws / "data")
    (ws / "openlineage-home").mkdir()
    w = ["-w", str(ws)]
    outputs: dict[str, str] = {}
    errors: dict[str, str] = {}
    first = len(receiver.events)  # the faster tests above share the receiver
    with pytest.MonkeyPatch.context() as mp:
        for k in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
            mp.delenv(k)
        mp.setenv("HOME", str(ws / "openlineage-home"))
        mp.chdir(top)
        mp.setenv("OPENLINEAGE_URL", receiver.url)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{top}/mlflow.db")

        def step(stage: str, *args: str) -> None:
            code, out, err = cli(*args, *w)
            assert code == 0, (stage, out, err)
            outputs[stage], errors[stage] = out, err

        step("generate", "generate", "--dataset", "digits")
        step("filter", "filter", CANDIDATES)
        step("validate", "validate", FILTERED)
        commit_all(ws, "Made again by the CLI")
        step("release", "release", "digits", "--version", "1.0.0", "--actor", HOSTILE_ACTOR)
        step(
            "derive",
            "derive",
            "digits@1.0.0",
            "--version",
            "1.1.0",
            "--reason",
            HOSTILE_REASON,
            "--exclude-identity",
            "7",
        )
        step("train", "train", "digits", "--dataset", "digits@1.1.0")
        step("withdraw", "withdraw", "digits@1.0.0", "--reason", HOSTILE_REASON)
        yield Piped(ws, built.key, receiver.events[first:], outputs, errors)


def _runs(events: list[dict]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for e in events:
        runs.setdefault(e["run"]["runId"], []).append(e)
    return runs


def _final(events: list[dict], job: str) -> dict:
    found = [e for e in events if e["job"]["name"] == job and e["eventType"] != "START"]
    assert len(found) == 1, [(e["job"]["name"], e["eventType"]) for e in events]
    return found[0]


@pytest.mark.slow
def test_every_stage_sends_start_then_complete_and_every_event_is_valid(piped: Piped, receiver: Receiver):
    assert piped.events, "the receiver got nothing"
    assert set(receiver.paths[-len(piped.events) :]) == {
        "/api/v1/lineage"
    }  # OPENLINEAGE_URL's default endpoint, Marquez's
    for event in piped.events:
        check_event(event)
    runs = _runs(piped.events)
    jobs = [(r[0]["job"]["name"], [e["eventType"] for e in r]) for r in runs.values()]
    assert jobs == [(f"{s}@digits", ["START", "COMPLETE"]) for s in STAGES]
    for stage, err in piped.errors.items():  # nothing about lineage on stderr when all went well
        assert "OpenLineage" not in err, (stage, err)


@pytest.mark.slow
def test_datasets_are_named_by_workspace_path_release_and_model(piped: Piped):
    namespace = {d["namespace"] for e in piped.events for d in e["inputs"] + e["outputs"]}
    assert namespace == {f"file://{socket.gethostname()}{piped.ws.resolve()}"}  # no git origin here
    names = {
        s: (
            [d["name"] for d in _final(piped.events, f"{s}@digits")["inputs"]],
            [d["name"] for d in _final(piped.events, f"{s}@digits")["outputs"]],
        )
        for s in STAGES
    }
    assert names["generate"] == (
        ["recipes/digits.yaml", "generators/tiny_digits/model"],
        [f"{CANDIDATES}/manifest.parquet"],
    )
    assert names["filter"] == ([f"{CANDIDATES}/manifest.parquet"], [f"{FILTERED}/manifest.parquet"])
    assert names["validate"] == (
        [
            f"{FILTERED}/manifest.parquet",
            "recipes/digits.yaml",
            "policies/packs/default.yaml",
            "policies/packs/digits.yaml",
        ],
        ["data/digits/policy/report.json"],
    )
    assert names["release"] == (
        [f"{FILTERED}/manifest.parquet", "data/digits/policy/report.json"],
        ["digits@1.0.0"],
    )
    assert names["derive"] == (["digits@1.0.0"], ["digits@1.1.0"])
    assert names["train"] == (["digits@1.1.0"], ["models:/digits-classifier/1"])
    assert names["withdraw"] == (["digits@1.0.0"], ["digits@1.0.0"])


def _dataset(event: dict, side: str, name: str) -> dict:
    return next(d for d in event[side] if d["name"] == name)


@pytest.mark.slow
def test_manifests_carry_their_digest_schema_source_and_filter_column_lineage(piped: Piped):
    import pyarrow.parquet as pq

    from registry.core.digests import sha256_file

    done = _final(piped.events, "filter@digits")
    out = _dataset(done, "outputs", f"{FILTERED}/manifest.parquet")
    f = out["facets"]
    path = piped.ws / FILTERED / "manifest.parquet"
    assert f["version"]["datasetVersion"] == sha256_file(path)
    schema = pq.read_schema(path)
    assert [(x["name"], x["type"], x["ordinal_position"]) for x in f["schema"]["fields"]] == [
        (c.name, str(c.type), i) for i, c in enumerate(schema, start=1)
    ]
    described = {x["name"]: x.get("description") for x in f["schema"]["fields"]}
    assert described["shard"] == "shard file, relative to the workspace"
    assert f["dataSource"]["uri"] == out["namespace"]
    assert out["outputFacets"]["outputStatistics"]["rowCount"] == pq.ParquetFile(path).metadata.num_rows
    lineage = f["columnLineage"]["fields"]
    assert set(lineage) == set(schema.names)
    for column, got in lineage.items():
        inputs = [(i["name"], i["field"], i["transformations"][0]["subtype"]) for i in got["inputFields"]]
        if column in FILTER_FIELDS:  # scored from the image
            assert inputs == [(f"{CANDIDATES}/manifest.parquet", c, "TRANSFORMATION") for c in
                              ("shard", "member", "image_sha256")]  # fmt: skip
        else:
            assert inputs == [(f"{CANDIDATES}/manifest.parquet", column, "IDENTITY")]
    # the filter's input is described too, as it was read
    given = _dataset(done, "inputs", f"{CANDIDATES}/manifest.parquet")["facets"]
    assert given["version"]["datasetVersion"] == sha256_file(piped.ws / CANDIDATES / "manifest.parquet")


@pytest.mark.slow
def test_a_release_carries_the_release_and_its_signature(piped: Piped):
    from registry.core.digests import sha256_file
    from registry.records.release import Release

    folder = piped.ws / "releases/digits/1.0.0"
    record = Release.model_validate_json((folder / "release.json").read_text())
    envelope = json.loads((folder / "release.dsse.json").read_text())
    out = _dataset(_final(piped.events, "release@digits"), "outputs", "digits@1.0.0")["facets"]
    assert out["version"]["datasetVersion"] == record.manifest_sha256
    r = out["synthreg_release"]
    assert (r["name"], r["version"], r["manifestSha256"], r["gitCommit"]) == (
        "digits",
        "1.0.0",
        record.manifest_sha256,
        record.git_commit,
    )
    assert r["status"] == "solo" and r["actor"] == HOSTILE_ACTOR  # data, exactly as given
    assert r["samples"]["total"] == record.counts.total and r["shards"] == len(record.shards)
    remote_name, _, remote_url = record.remote.partition(" ")
    assert out["dataSource"] == {**out["dataSource"], "name": remote_name, "uri": remote_url}
    s = out["synthreg_signature"]
    assert s["envelopeSha256"] == sha256_file(folder / "release.dsse.json")
    assert s["keyids"] == [sig["keyid"] for sig in envelope["signatures"]] and s["keyids"]
    assert s["envelope"] == "releases/digits/1.0.0/release.dsse.json"
    assert "schema" in out


@pytest.mark.slow
def test_derive_withdraw_and_train_say_what_they_did(piped: Piped):
    derived = _dataset(_final(piped.events, "derive@digits"), "outputs", "digits@1.1.0")["facets"]
    assert derived["synthreg_release"]["derivedFrom"]["reason"] == HOSTILE_REASON
    assert derived["synthreg_release"]["derivedFrom"]["parent"] == "digits@1.0.0"
    lineage = derived["columnLineage"]
    assert [(i["name"], i["field"], i["transformations"][0]["subtype"]) for i in lineage["dataset"]] == [
        ("digits@1.0.0", "identity", "FILTER")
    ]
    assert lineage["fields"]["prompt"]["inputFields"][0]["name"] == "digits@1.0.0"

    gone = _dataset(_final(piped.events, "withdraw@digits"), "outputs", "digits@1.0.0")["facets"]
    w = gone["synthreg_withdrawal"]
    assert w["reason"] == HOSTILE_REASON and w["trusted"] is True and w["envelopeSha256"]
    assert gone["synthreg_release"]["status"].endswith("withdrawn")

    trained = _final(piped.events, "train@digits")
    model = _dataset(trained, "outputs", "models:/digits-classifier/1")["facets"]
    assert model["datasetType"]["datasetType"] == "MODEL"
    assert model["dataSource"]["uri"].startswith("sqlite:///")
    assert trained["inputs"][0]["facets"]["synthreg_release"]["version"] == "1.1.0"


@pytest.mark.slow
def test_hostile_values_are_data_never_run(piped: Piped, tmp_path: Path):
    for where in (piped.ws, piped.ws.parent, Path.cwd()):
        assert not (where / "pwned").exists() and not (where / "pwned2").exists()
    text = json.dumps(piped.events)
    assert json.dumps(HOSTILE_REASON)[1:-1] in text  # as a JSON string, escaped by json, nothing else


# --- failures -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_stage_sends_fail_not_complete(piped: Piped, receiver: Receiver, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
    before = len(receiver.events)
    code, _, err = cli("release", "digits", "--version", "1.0.0", "-w", str(piped.ws))  # exists: refused
    assert code == 1 and err.startswith("error: ")
    strict = piped.ws / "policies/packs/strict.yaml"
    write_yaml(
        strict,
        {
            "id": "strict",
            "description": "a rule every prompt fails",
            "rules": [
                {
                    "id": "test.no-prompts",
                    "kind": "prompt-deny",
                    "severity": "error",
                    "description": "x",
                    "patterns": ["."],
                }
            ],
        },
    )
    code, _, _ = cli(
        "validate", FILTERED, "--pack", "policies/packs/strict.yaml", "--out", "data/digits/strict",
        "-w", str(piped.ws),
    )  # fmt: skip
    assert code == 3
    new = receiver.events[before:]
    for event in new:
        check_event(event)
    runs = list(_runs(new).values())
    assert [[(e["job"]["name"], e["eventType"]) for e in r] for r in runs] == [
        [("release@digits", "START"), ("release@digits", "FAIL")],
        [("validate@digits", "START"), ("validate@digits", "FAIL")],
    ]
    refused, failed = runs[0][1], runs[1][1]
    assert refused["run"]["facets"]["errorMessage"]["message"] == err.removeprefix("error: ").strip()
    assert refused["run"]["facets"]["errorMessage"]["programmingLanguage"] == "python"
    assert failed["run"]["facets"]["errorMessage"]["message"] == "exited with code 3"
    assert all("facets" not in d or not d["facets"] for d in failed["outputs"])  # not described on FAIL


@pytest.mark.slow
def test_no_configuration_sends_nothing_and_imports_nothing(piped: Piped, receiver: Receiver, tmp_path: Path):
    """No OPENLINEAGE_* variable, no openlineage.yml here or in HOME: a stage runs in a fresh process,
    the receiver gets nothing, and the openlineage package is never imported."""
    before = len(receiver.events)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    script = (
        "import sys\nfrom registry.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('IMPORTED' if any(m.split('.')[0] == 'openlineage' for m in sys.modules) else 'CLEAN', code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "validate", FILTERED, "-w", str(piped.ws)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.splitlines()[-1] == "CLEAN 0", proc.stdout + proc.stderr
    assert len(receiver.events) == before
    assert "eventType" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_an_endpoint_that_is_down_warns_once_and_the_stage_completes(
    piped: Piped, monkeypatch: pytest.MonkeyPatch
):
    # Configured by OPENLINEAGE__TRANSPORT__* variables, with no retries, so the test does not wait.
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", url)
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__RETRY", json.dumps({"total": 0, "connect": 0, "read": 0}))
    code, out, err = cli("validate", FILTERED, "-w", str(piped.ws))
    assert code == 0, err
    warned = [line for line in err.splitlines() if "OpenLineage" in line]
    assert len(warned) == 1, err
    assert warned[0].startswith(
        f"warning: OpenLineage events for validate@digits: not sent to {url}/api/v1/lineage"
    )
    assert warned[0].endswith("the stage goes on without them")
    assert "report" in out  # the stage's own output, as without lineage


@pytest.mark.slow
def test_file_and_console_transports_from_openlineage_yml_and_variables(
    piped: Piped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """openlineage.yml in the working folder (a file transport), then OPENLINEAGE__TRANSPORT__TYPE=console:
    the same valid events, in a file and on stderr (stdout keeps the command's own output)."""
    log = tmp_path / "events.jsonl"
    (tmp_path / "openlineage.yml").write_text(
        yaml.safe_dump({"transport": {"type": "file", "log_file_path": str(log), "append": True}})
    )
    code, _, err = cli("validate", FILTERED, "-w", str(piped.ws))
    assert code == 0, err
    written = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["eventType"] for e in written] == ["START", "COMPLETE"]
    for event in written:
        check_event(event)

    (tmp_path / "openlineage.yml").unlink()
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    code, out, err = cli("validate", FILTERED, "-w", str(piped.ws))
    assert code == 0, err
    printed = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [e["eventType"] for e in printed] == ["START", "COMPLETE"]
    assert "eventType" not in out
    for event in printed:
        check_event(event)


@pytest.mark.slow
def test_a_configuration_without_a_transport_sends_nothing_and_says_so(
    piped: Piped, tmp_path: Path, receiver: Receiver
):
    (tmp_path / "openlineage.yml").write_text(yaml.safe_dump({"facets": {"environment_variables": []}}))
    before = len(receiver.events)
    code, out, err = cli("validate", FILTERED, "-w", str(piped.ws))
    assert code == 0, err
    assert "eventType" not in out + err and len(receiver.events) == before
    assert [line for line in err.splitlines() if "OpenLineage" in line] == [
        "warning: an OpenLineage configuration was found but it names no transport; no lineage events "
        "are sent for validate@digits"
    ]
