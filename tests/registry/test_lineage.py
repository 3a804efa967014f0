"""Lineage: trace runs, models and images back to releases; impact forward to versions, runs and models;
withdrawals. Releases are written by hand (a real ``Release`` record and a manifest, no generator and no
signature: trace does not verify signatures); MLflow runs live in a SQLite store on tmp_path and follow
``registry.downstream.tracking``'s conventions.

The world (git workspace, two releases, four runs, two model versions) is built once per module; a test
that changes it (withdraw) works on a copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from registry.cli import app
from registry.core.digests import perceptual_hash, sha256_file
from registry.core.errors import ReleaseError, SynthregError, TrackingError
from registry.downstream import tracking
from registry.lineage.image import trace_image
from registry.lineage.impact import impact
from registry.lineage.trace import trace_model, trace_run
from registry.records.dataset import IntendedUse, SourceRef
from registry.records.lineage import (
    DatasetEntry,
    FilterCounts,
    GeneratorInfo,
    PolicyInfo,
    SampleStats,
    SourceInfo,
    Unresolved,
)
from registry.records.policy import Waiver
from registry.records.release import Counts, GeneratorUse, Release
from registry.releases.withdraw import withdraw
from registry.store import audit
from registry.store import manifest as mf
from registry.trust.withdrawals import is_withdrawn
from tests.registry.conftest import table_rows

runner = CliRunner()
TINY = hashlib.sha256(b"tiny-digits weights").hexdigest()
SD = hashlib.sha256(b"sd-mini weights").hexdigest()
SCHED = hashlib.sha256(b"scheduler").hexdigest()
TRAINING = SourceRef(name="sklearn-digits", licence="CC-BY-4.0", role="generator-training", digest="9ef9")
FILTERING = SourceRef(name="sklearn-digits", licence="CC-BY-4.0", role="filtering")
CONDITIONING = SourceRef(name="mnist-cond", licence="CC-BY-SA-3.0", role="conditioning")
GENERATORS = {"tiny-digits": (TINY, "CC-BY-4.0"), "sd-mini": (SD, "CreativeML-OpenRAIL-M")}


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def picture() -> np.ndarray:
    """A 64x64 image: a soft blob on faint stripes, whose phash one changed pixel barely moves."""
    y, x = np.mgrid[0:64, 0:64]
    blob = 255 * np.exp(-((y - 20) ** 2 + (x - 40) ** 2) / 200.0) + 30 * np.sin(y / 5.0)
    return np.clip(blob, 0, 255).astype(np.uint8)


def row(i: int, generator: str, image: bytes | None = None, decision: str = "accepted") -> dict:
    digest, licence = GENERATORS[generator]
    data = image if image is not None else png(np.full((8, 8), i % 256, dtype=np.uint8))
    identity = str(i % 10)
    return {
        "dataset": "digits",
        "sample_id": f"digits-{generator}-{i:05d}",
        "index": i,
        "identity": identity,
        "attributes": {"stroke": "thin" if i % 2 else "bold"},
        "prompt": f"a handwritten digit {identity} with a {'thin' if i % 2 else 'bold'} stroke",
        "negative_prompt": "",
        "seed": 1000 + i,
        "steps": 20,
        "guidance": 2.0,
        "width": 32,
        "height": 32,
        "generator_name": generator,
        "generator_backend": "tiny-digits" if generator == "tiny-digits" else "diffusers",
        "generator_source": f"models/{generator}",
        "weights_digest": digest,
        "generator_licence": licence,
        "pipeline_class": "TinyDigits",
        "scheduler": "DDIMScheduler",
        "scheduler_config_digest": SCHED,
        "image_sha256": hashlib.sha256(data).hexdigest(),
        "phash": perceptual_hash(data) if image is not None else f"{(i * 0x0F0F0F0F0F0F0F) % 2**64:016x}",
        "shard": "data/digits/candidates/shards/shard-00000.tar",
        "member": f"digits-{generator}-{i:05d}.png",
        "batch": 0,
        "batch_size": 16,
        "library_versions": {"torch": "2.13.0"},
        "device": "cpu",
        "decision": decision,
        "reason": "ok: passed every check" if decision == "accepted" else "identity: predicted 3",
    }


def write_release(ws: Path, version: str, rows: list[dict], sources: list[SourceRef]) -> Release:
    folder = ws / "releases" / "digits" / version
    manifest = folder / "data" / "manifest.parquet"
    mf.write_table(mf.to_table(rows), manifest)
    gens: dict[str, int] = {}
    for r in rows:
        gens[r["generator_name"]] = gens.get(r["generator_name"], 0) + 1
    accepted = sum(r["decision"] == "accepted" for r in rows)
    record = Release(
        name="digits",
        version=version,
        manifest_sha256=sha256_file(manifest),
        shards=[],
        counts=Counts(
            total=len(rows),
            accepted=accepted,
            rejected=len(rows) - accepted,
            per_identity={},
            reasons={"ok": accepted, "identity": len(rows) - accepted},
        ),
        generators=[
            GeneratorUse(
                name=g,
                backend="diffusers",
                weights_digest=GENERATORS[g][0],
                licence=GENERATORS[g][1],
                pipeline_class="TinyDigits",
                scheduler="DDIMScheduler",
                images=n,
            )
            for g, n in sorted(gens.items())
        ],
        sources=sources,
        prompt_templates=["a handwritten digit {identity} with a {stroke} stroke"],
        seed=20240607,
        policy_report_sha256="0" * 64,
        policy_passed=True,
        policy_results={"bias.requested-balance": "waived", "licence.use": "pass"},
        waivers=[
            Waiver(
                rule_id="bias.requested-balance",
                scope="digits",
                reason="toy set",
                approver="Ada",
                expires=date(2099, 1, 1),
            )
        ],
        intended_use=IntendedUse(commercial=False, purposes=["research"]),
        dataset_licence="CC-BY-4.0",
        git_commit="f" * 40,
        created_at=datetime(2026, 11, 2, tzinfo=UTC),
        actor="Release Tester",
    )
    (folder / "release.json").write_text(json.dumps(record.model_dump(mode="json"), indent=2) + "\n")
    return record


def git(ws: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


class World:
    def __init__(self, ws: Path, uri: str) -> None:
        self.ws, self.uri = ws, uri
        self.runs: dict[str, str] = {}
        self.image = png(picture())


def log_run(c, exp: str, name: str, digest: str, source: str) -> str:
    """MLflow keeps at most 36 characters of a dataset digest: the input carries the sha256's first 36
    hex, the synthreg.manifest_sha256 tag the whole of it."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    run = c.create_run(
        exp,
        run_name=name,
        tags={tracking.TAG_DATASET: name, tracking.TAG_MANIFEST: digest, tracking.TAG_SHARE: "0.5"},
    )
    ds = Dataset(name=name, digest=digest[:36], source_type="synthreg", source=source)
    c.log_inputs(run.info.run_id, [DatasetInput(ds, [InputTag("mlflow.data.context", "training")])])
    c.log_metric(run.info.run_id, "accuracy", 0.9)
    c.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    ws = tmp_path_factory.mktemp("lineage")
    w = World(ws, f"sqlite:///{ws}/mlflow.db")
    git(ws, "init", "-q")
    git(ws, "config", "user.name", "Lineage Tester")
    git(ws, "config", "user.email", "lineage@example.org")
    (ws / ".gitignore").write_text("mlflow.db\n")
    v1 = [row(0, "tiny-digits", w.image)] + [row(i, "tiny-digits") for i in range(1, 6)]
    v1.append(row(6, "tiny-digits", decision="rejected"))
    r1 = write_release(ws, "1.0.0", v1, [FILTERING, TRAINING])
    v2 = v1[:4] + [row(i, "sd-mini") for i in range(10, 15)]
    r2 = write_release(ws, "2.0.0", v2, [FILTERING, TRAINING, CONDITIONING])
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "releases")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", w.uri)
        c = tracking.client(ws)
        exp = c.create_experiment("lineage", artifact_location=(ws / "artifacts").as_uri())
        other = c.create_experiment("other", artifact_location=(ws / "artifacts2").as_uri())
        as_json = json.dumps({"uri": tracking.dataset_source("digits", "1.0.0", "f" * 40)})
        w.runs["a"] = log_run(c, exp, "digits@1.0.0", r1.manifest_sha256, as_json)
        w.runs["b"] = log_run(
            c, other, "digits@2.0.0", r2.manifest_sha256, tracking.dataset_source("digits", "2.0.0", "f" * 40)
        )
        w.runs["working"] = log_run(c, exp, "digits@working", "1" * 64, "synthreg://data/digits/filtered")
        w.runs["wrong"] = log_run(c, exp, "digits@1.0.0", "2" * 64, as_json)
        c.create_registered_model("digit-clf")
        for key in ("a", "b"):
            rid = w.runs[key]
            c.create_model_version("digit-clf", source=f"runs:/{rid}/model", run_id=rid)
    return w


@pytest.fixture
def ws(world: World, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.uri)
    return world.ws


def copy_world(world: World, dst: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(world.ws, dst)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{dst}/mlflow.db")
    return dst


# --- trace ---------------------------------------------------------------------------------------------


def test_trace_run_reaches_generator_sources_and_seeds(world: World, ws: Path) -> None:
    t = trace_run(ws, world.runs["a"])
    assert t.run.run_id == world.runs["a"]
    assert t.run.tags[tracking.TAG_DATASET] == "digits@1.0.0"
    assert t.run.metrics == {"accuracy": 0.9}
    (d,) = t.datasets
    assert d.release == "digits@1.0.0" and d.released and d.digest_matches
    assert d.source.startswith("{") and d.source_git_commit == "f" * 40  # JSON source is read
    assert d.context == "training"
    assert [(g.name, g.weights_digest, g.licence) for g in d.generators] == [
        ("tiny-digits", TINY, "CC-BY-4.0")
    ]
    assert {(s.name, s.role, s.licence, s.status) for s in d.sources} == {
        ("sklearn-digits", "filtering", "CC-BY-4.0", "active"),
        ("sklearn-digits", "generator-training", "CC-BY-4.0", "active"),
    }
    assert d.samples.model_dump() == {"count": 7, "accepted": 6, "seed_min": 1000, "seed_max": 1006}
    assert d.filter.model_dump() == {
        "total": 7,
        "accepted": 6,
        "rejected": 1,
        "reasons": {"ok": 6, "identity": 1},
    }
    assert d.prompt_templates == ["a handwritten digit {identity} with a {stroke} stroke"]
    assert d.policy.passed and d.policy.waivers[0].approver == "Ada"
    assert d.withdrawn is None
    assert "generator-training" in d.notes[0] and "sklearn-digits" in d.notes[0]
    assert t.warnings == []


def test_trace_model_follows_the_version_to_its_run(world: World, ws: Path) -> None:
    t = trace_model(ws, "digit-clf/2")
    assert t.model.run_id == world.runs["b"]
    (d,) = t.datasets
    assert d.release == "digits@2.0.0" and d.digest_matches
    assert {g.weights_digest for g in d.generators} == {TINY, SD}
    assert "mnist-cond" in {s.name for s in d.sources}
    assert d.samples.count == 9
    assert trace_model(ws, "models:/digit-clf/1").datasets[0].release == "digits@1.0.0"


def test_trace_flags_a_digest_mismatch_and_an_unreleased_input(world: World, ws: Path) -> None:
    d = trace_run(ws, world.runs["wrong"]).datasets[0]
    assert d.digest_matches is False
    assert d.warnings[0].startswith("DIGEST MISMATCH")
    w = trace_run(ws, world.runs["working"])
    assert w.datasets[0].released is False
    # Its manifest is nowhere (no such file, and no DVC md5 logged): trace says where it looked.
    assert w.warnings[0] == (
        f"UNRELEASED: digits@working (manifest sha256 {'1' * 64}) resolves nowhere: looked in the "
        "workspace (0 manifest(s) under data/); not the DVC cache or remote: the run logged no DVC md5 "
        "(synthreg.dvc_md5). It was deleted or changed after training; shown is what the run logged"
    )
    assert w.unresolved == [
        Unresolved(dataset="digits@working", manifest_sha256="1" * 64, looked=w.datasets[0].looked)
    ]


def test_trace_errors_name_what_is_missing(world: World, ws: Path) -> None:
    with pytest.raises(TrackingError, match=f"^run nope not found in {world.uri}$"):
        trace_run(ws, "nope")
    with pytest.raises(TrackingError, match=r"model 'clf' not found .*registered models: digit-clf"):
        trace_model(ws, "clf/1")
    with pytest.raises(TrackingError, match=r"has no version '9' .*known versions: 1, 2$"):
        trace_model(ws, "digit-clf/9")
    with pytest.raises(TrackingError, match="is not NAME/VERSION"):
        trace_model(ws, "digit-clf")


# --- impact --------------------------------------------------------------------------------------------


def test_impact_of_a_generator_reaches_versions_runs_and_models(world: World, ws: Path) -> None:
    res = impact(ws, generator="tiny-digits")
    assert [(v.release, v.samples, v.accepted) for v in res.versions] == [
        ("digits@1.0.0", 7, 6),
        ("digits@2.0.0", 4, 4),
    ]
    assert {r.run_id for r in res.runs} == {world.runs[k] for k in ("a", "b", "wrong")}
    assert {(m.name, m.version) for m in res.model_versions} == {
        ("digit-clf", "1"),
        ("digit-clf", "2"),
    }
    assert res.counts.model_dump() == {
        "versions": 2,
        "samples": 11,
        "accepted": 10,
        "runs": 3,
        "model_versions": 2,
        "unresolved_runs": 1,
        "runs_without_the_sample": 0,
    }
    assert any(w.startswith("DIGEST MISMATCH") and world.runs["wrong"] in w for w in res.warnings)
    # The run on a working manifest that is nowhere is listed, with why, never dropped.
    (u,) = res.unresolved_runs
    assert (u.run_id, u.dataset) == (world.runs["working"], "digits@working")
    said = f"UNRESOLVED: run {world.runs['working']} trained on digits@working, but its manifest resolves "
    assert said in "\n".join(res.warnings)

    by_digest = impact(ws, generator=SD[:12])
    assert [v.release for v in by_digest.versions] == ["digits@2.0.0"]
    assert [r.run_id for r in by_digest.runs] == [world.runs["b"]]
    assert [m.version for m in by_digest.model_versions] == ["2"]
    assert impact(ws, generator=SD[:7]).versions == []  # a prefix needs 8 hex characters


def test_impact_of_a_source_a_prompt_and_a_sample(world: World, ws: Path) -> None:
    src = impact(ws, source="mnist-cond")
    assert [(v.release, v.samples) for v in src.versions] == [("digits@2.0.0", 9)]
    assert [m.version for m in src.model_versions] == ["2"]
    assert len(impact(ws, source="sklearn-digits").versions) == 2

    prompt = impact(ws, prompt=r"digit [12] with a thin")
    assert [(v.release, v.samples) for v in prompt.versions] == [
        ("digits@1.0.0", 1),
        ("digits@2.0.0", 2),
    ]

    sample = impact(ws, sample="digits-sd-mini-00011")
    assert [(v.release, v.samples) for v in sample.versions] == [("digits@2.0.0", 1)]
    assert impact(ws, sample="digits-none").counts.versions == 0


def test_impact_of_a_version_lists_the_runs_and_models_trained_on_it(world: World, ws: Path) -> None:
    """Issue 21: `impact --version NAME@X.Y.Z`: every run that logged that version (a mismatched digest
    flagged), and the models they made; nothing about working manifests."""
    res = impact(ws, version="digits@1.0.0")
    assert res.selector == {"version": "digits@1.0.0"}
    assert [(v.release, v.samples, v.accepted) for v in res.versions] == [("digits@1.0.0", 7, 6)]
    assert {r.run_id: r.digest_matches for r in res.runs} == {
        world.runs["a"]: True,
        world.runs["wrong"]: False,
    }
    assert [(m.name, m.version) for m in res.model_versions] == [("digit-clf", "1")]
    assert res.unresolved_runs == [] and not any(w.startswith("UNRESOLVED") for w in res.warnings)
    assert [m.version for m in impact(ws, version="digits@v2.0.0").model_versions] == ["2"]
    with pytest.raises(
        SynthregError, match=r"'digits@3\.0\.0' is not a released version .*: digits@1\.0\.0, "
    ):
        impact(ws, version="digits@3.0.0")
    out = runner.invoke(app, ["impact", "--version", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code == 0, out.output
    assert table_rows(out.stdout)[0] == [
        "reached",
        "1 version(s), 7 sample(s) (6 accepted), 2 run(s), 1 model version(s)",
    ]


def test_impact_needs_exactly_one_selector(ws: Path) -> None:
    with pytest.raises(SynthregError, match="exactly one"):
        impact(ws)
    with pytest.raises(SynthregError, match=r"got --generator, --source"):
        impact(ws, generator="x", source="y")
    with pytest.raises(SynthregError, match="not a valid regular expression"):
        impact(ws, prompt="(")


# --- images --------------------------------------------------------------------------------------------


def test_trace_image_exact_and_perceptual(world: World, ws: Path, tmp_path: Path) -> None:
    exact = tmp_path / "found.png"
    exact.write_bytes(world.image)
    t = trace_image(ws, exact)
    assert t.match == "exact"
    (im,) = t.images
    assert im.sample_id == "digits-tiny-digits-00000" and im.weights_digest == TINY
    assert im.seed == 1000 and im.prompt.startswith("a handwritten digit 0")
    assert t.versions == ["digits@1.0.0", "digits@2.0.0"]
    assert {s.name for s in im.versions[0].sources} == {"sklearn-digits"}

    pixels = picture()
    pixels[5, 5] = pixels[5, 5] // 2 + 7
    near = tmp_path / "near.png"
    near.write_bytes(png(pixels))
    assert hashlib.sha256(near.read_bytes()).hexdigest() != im.image_sha256
    p = trace_image(ws, near)
    assert p.match == "perceptual"
    assert p.images[0].sample_id == "digits-tiny-digits-00000"
    assert p.images[0].distance <= 4 and p.versions == ["digits@1.0.0", "digits@2.0.0"]


def test_tracing_an_image_imports_no_mlflow(world: World, ws: Path, tmp_path: Path) -> None:
    """The release side of lineage reads signed releases and manifests only: a fresh process that traces
    an image through the CLI never loads MLflow (seconds of imports)."""
    import sys

    exact = tmp_path / "found.png"
    exact.write_bytes(world.image)
    code = (
        "import sys\nfrom registry.cli import app\n"
        f"try:\n    app(['trace', 'image', {str(exact)!r}, '--json', '-w', {str(ws)!r}])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('MLFLOW', 'mlflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "digits-tiny-digits-00000" in out  # it really traced the image
    assert out.rstrip().endswith("MLFLOW False")


def test_an_image_in_no_version_is_an_error(ws: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.png"
    y, x = np.mgrid[0:32, 0:32]
    other.write_bytes(png(((x * y) % 256).astype(np.uint8)))
    with pytest.raises(ReleaseError, match="is in no released version"):
        trace_image(ws, other)


# --- withdraw ------------------------------------------------------------------------------------------


def test_withdraw_marks_the_release_and_trace_shows_it(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    record = ws / "releases/digits/1.0.0/release.json"
    before = record.read_bytes()
    w = withdraw(ws, "digits@1.0.0", "conditioning source withdrawn by its owner", actor="Auditor")
    assert w.actor == "Auditor" and w.release == "digits@1.0.0"
    assert is_withdrawn(ws, "digits", "1.0.0") == w
    assert is_withdrawn(ws, "digits", "2.0.0") is None
    assert record.read_bytes() == before  # the signed record is untouched
    (event,) = audit.read(ws)
    assert (event.kind, event.subject, event.actor) == ("withdrawal", "digits@1.0.0", "Auditor")
    assert git(ws, "status", "--porcelain", "releases", "audit") == ""
    assert git(ws, "log", "-1", "--format=%s").startswith("Withdraw digits@1.0.0")

    d = trace_run(ws, world.runs["a"]).datasets[0]
    assert d.withdrawn.reason == "conditioning source withdrawn by its owner"
    assert d.warnings[0].startswith("WITHDRAWN: digits@1.0.0")
    res = impact(ws, generator="tiny-digits")
    assert [bool(v.withdrawn) for v in res.versions] == [True, False]
    out = runner.invoke(app, ["trace", "run", world.runs["a"], "-w", str(ws)])
    assert out.exit_code == 0 and "** WITHDRAWN **" in out.output

    with pytest.raises(ReleaseError, match=r"already withdrawn on .* by Auditor"):
        withdraw(ws, "digits@1.0.0", "again")
    with pytest.raises(ReleaseError, match=r"is not NAME@X\.Y\.Z"):
        withdraw(ws, "digits", "no version")
    with pytest.raises(ReleaseError, match=r"digits@3\.0\.0 is not released"):
        withdraw(ws, "digits@3.0.0", "no such version")
    cli = runner.invoke(app, ["withdraw", "digits@2.0.0", "--reason", "superseded", "-w", str(ws)])
    assert cli.exit_code == 0, cli.output
    assert cli.output.startswith("withdrew digits@2.0.0")
    again = runner.invoke(app, ["withdraw", "digits@2.0.0", "--reason", "x", "-w", str(ws)])
    assert again.exit_code == 1 and again.stderr.startswith("error: digits@2.0.0 was already withdrawn")


# --- CLI -----------------------------------------------------------------------------------------------


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_cli_trace_and_impact(world: World, ws: Path, tmp_path: Path) -> None:
    out = runner.invoke(app, ["trace", "model", "digit-clf/1", "-w", str(ws)])
    assert out.exit_code == 0, out.output
    rows = table_rows(out.stdout)
    assert ["tiny-digits", "diffusers", "CC-BY-4.0", TINY, "7"] in rows  # name, backend, licence, weights
    assert ["sklearn-digits", "generator-training", "active", "CC-BY-4.0", "all"] in rows
    js = runner.invoke(app, ["trace", "run", world.runs["b"], "--json", "-w", str(ws)])
    assert json.loads(js.stdout)["datasets"][0]["release"] == "digits@2.0.0"
    imp = runner.invoke(app, ["impact", "--generator", "sd-mini", "-w", str(ws)])
    assert imp.exit_code == 0 and imp.output.startswith("generator 'sd-mini'")
    reached = "1 version(s), 5 sample(s) (5 accepted), 1 run(s), 1 model version(s)"
    assert table_rows(imp.stdout)[0] == ["reached", reached]
    image = tmp_path / "x.png"
    image.write_bytes(world.image)
    img = runner.invoke(app, ["trace", "image", str(image), "--json", "-w", str(ws)])
    assert json.loads(img.stdout)["images"][0]["sample_id"] == "digits-tiny-digits-00000"


def test_cli_bad_input(world: World, ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = ["-w", str(ws)]
    cases = {
        ("trace", "run", "nope"): f"error: run nope not found in {world.uri}",
        ("trace", "model", "digit-clf/7"): (
            f"error: model 'digit-clf' has no version '7' in {world.uri}; known versions: 1, 2"
        ),
        ("trace", "model", "nomodel/1"): (
            f"error: model 'nomodel' not found in {world.uri}; registered models: digit-clf"
        ),
        ("impact",): "error: give exactly one of --generator, --source, --prompt, --sample, --version",
        ("impact", "--generator", "a", "--sample", "b"): (
            "error: give exactly one of --generator, --source, --prompt, --sample, --version "
            "(got --generator, --sample)"
        ),
    }
    for args, line in cases.items():
        result = runner.invoke(app, [*args, *w])
        assert result.exit_code == 1, (args, result.output)
        assert error_lines(result) == [line], args

    stranger = tmp_path / "stranger.png"
    stranger.write_bytes(png(np.eye(32, dtype=np.uint8) * 255))
    result = runner.invoke(app, ["trace", "image", str(stranger), *w])
    assert result.exit_code == 1
    (line,) = error_lines(result)
    assert line.startswith(f"error: image {stranger} (sha256 ") and "is in no released version" in line

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "notauri")
    bad_uri = (
        "error: MLFLOW_TRACKING_URI 'notauri' is not a URI; use e.g. sqlite:///mlflow.db or http://host:5000"
    )
    for args in (
        ("trace", "run", world.runs["a"]),
        ("trace", "model", "digit-clf/1"),
        ("impact", "--source", "x"),
    ):
        result = runner.invoke(app, [*args, *w])
        assert result.exit_code == 1 and error_lines(result) == [bad_uri], args


def test_a_server_that_is_down_is_an_error_naming_it(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's retries are capped (tracking.HTTP_RETRIES), so this takes seconds, not minutes.
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for k in tracking.HTTP_RETRIES:
        monkeypatch.delenv(k, raising=False)
    try:
        with pytest.raises(TrackingError) as e:
            trace_run(ws, "0123456789abcdef")
        request = f"API request to {uri}/api/2.0/mlflow/runs/get failed"
        assert str(e.value).startswith(f"MLflow at {uri}: {request}")
        assert "Connection refused" in str(e.value)
        assert {k: os.environ[k] for k in tracking.HTTP_RETRIES} == tracking.HTTP_RETRIES
    finally:
        for k in tracking.HTTP_RETRIES:
            os.environ.pop(k, None)


def test_trace_tables_print_logged_values_as_text_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """A logged MLflow profile may say anything: a weights digest like "[bold]x[/]" is shown as written
    (rich would otherwise read it as markup, drop the tags, or fail on a bad one)."""
    from registry.cli.common import make_console as _console
    from registry.cli.tracing import _fields, _lineage_tables, _samples_rows

    d = DatasetEntry(
        name="digits@1.0.0",
        digest=None,
        source="",
        source_url="",
        source_git_commit=None,
        context=None,
        release="digits@1.0.0",
        generators=[
            GeneratorInfo(name="g", backend="b", licence="[red]l", weights_digest="[bold]x[/]", images=1)
        ],
        sources=[
            SourceInfo(name="[b]s", role="filtering", licence="[/]", withdrawn_since=None, identities=None)
        ],
        policy=PolicyInfo(
            passed=True,
            report_sha256=None,
            results={},
            waivers=[
                Waiver(
                    rule_id="quality.x", scope="digits", reason="[i]why", expires="2030-01-01", approver="a"
                )
            ],
        ),
        samples=SampleStats(count=3, accepted=2, seed_min=0, seed_max=9),
        filter=FilterCounts(total=3, accepted=2, rejected=1, reasons={"[u]odd": 1}),
        recipe_seed=0,
    )
    console = _console()
    _lineage_tables(console, d, "digits@1.0.0")
    head = _fields("head")
    _samples_rows(head, d, recipe_sha=False)
    console.print(head)
    out = capsys.readouterr().out
    for text in ("[bold]x[/]", "[red]l", "[b]s", "[/]", "[i]why", "3 (2 accepted); seeds 0..9", "[u]odd 1"):
        assert text in out, out


HOSTILE_PROFILE = {
    "recipe_seed": "abc",
    "rows": "x",
    "accepted": 3,
    "git_commit": 5,
    "prompt_templates": [1, 2],
    "reasons": {"ok": "many"},
    "policy": {"passed": "maybe"},
    "manifest_sha256": 7,
    "sources": [
        {"name": "faces", "status": "withdrawn", "identities": "all", "role": "filtering"},
        {"name": 5, "version": 1},
    ],
    "generators": [{"name": "g", "images": "many", "from_a_newer_format": True}, "not a dict"],
}


def test_a_hostile_logged_profile_is_shown_as_unknown_never_a_crash(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's own script may log anything as a working input's profile: every malformed field is shown
    as unknown and named in a warning; no entry is dropped silently (a withdrawn source keeps its
    warning); `trace run` prints its table, it does not end in an internal error."""
    from mlflow.entities import Dataset, DatasetInput

    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    c = tracking.client(ws)
    exp = c.create_experiment("hostile", artifact_location=(tmp_path / "artifacts").as_uri())
    run = c.create_run(exp, run_name="hostile")
    ds = Dataset(
        name="digits@working",
        digest="2" * 36,
        source_type="synthreg",
        source="synthreg://x",
        profile=json.dumps(HOSTILE_PROFILE),
    )
    c.log_inputs(run.info.run_id, [DatasetInput(ds, [])])
    (d,) = trace_run(ws, run.info.run_id).datasets
    assert (d.recipe_seed, d.git_commit, d.prompt_templates, d.samples, d.policy.passed) == (
        None,
        None,
        [],
        None,
        None,
    )
    assert [s.name for s in d.sources] == ["faces", "5"]
    assert [(g.name, g.images) for g in d.generators] == [("g", None)]
    assert any(w.startswith("source faces (filtering) was marked withdrawn") for w in d.warnings)
    (malformed,) = [w for w in d.warnings if w.startswith("the run's logged profile has malformed ")]
    for field in ("recipe_seed", "rows", "git_commit", "prompt_templates", "reasons", "policy.passed"):
        assert field in malformed, malformed
    out = runner.invoke(app, ["trace", "run", run.info.run_id, "-w", str(ws)])
    assert "internal error" not in out.output and "malformed" in out.output, out.output


def test_models_flag_withdrawn_data_and_show_a_scripts_own_metrics(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: `synthreg models` says when a model's data was withdrawn, and shows the metrics a user's
    own script logged rather than dashes."""
    from registry.downstream.model_index import format_models, list_models

    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    c = tracking.client(ws)
    exp = c.create_experiment("own", artifact_location=(tmp_path / "artifacts").as_uri())
    run = c.create_run(exp, tags={tracking.TAG_DATASET: "digits@2.0.0"})
    c.log_metric(run.info.run_id, "mAP", 0.625)
    c.create_registered_model("own-detector")
    c.create_model_version("own-detector", source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    assert {(m.name, m.version): m.withdrawn for m in list_models(ws)} == {
        ("digit-clf", "2"): None,
        ("digit-clf", "1"): None,
        ("own-detector", "1"): None,
    }
    withdraw(ws, "digits@1.0.0", "consent withdrawn", actor="Auditor")
    rows = {(m.name, m.version): m for m in list_models(ws)}
    assert rows[("digit-clf", "1")].withdrawn.startswith("digits@1.0.0 withdrawn on ")
    assert rows[("digit-clf", "1")].withdrawn.endswith(": consent withdrawn")
    assert rows[("digit-clf", "2")].withdrawn is None
    assert rows[("own-detector", "1")].metrics == {"mAP": 0.625}
    text = "\n".join(format_models(list(rows.values())))
    assert "own-detector/1  digits@2.0.0  share -  mAP 0.625  run " in text
    assert f"run {run.info.run_id}  evaluated on unknown" in text  # its run does not say (issue 21)
    assert "    WITHDRAWN DATA: digits@1.0.0 withdrawn on " in text


@pytest.mark.parametrize(
    ("sha", "md5", "said"),
    [
        ("3" * 64, "../../../../etc", "the logged DVC md5 '../../../../etc' is not 32 hex digits"),
        ("../../etc/passwd", "a" * 32, "the logged sha256 '../../etc/passwd' is not 32 to 64 hex digits"),
    ],
)
def test_a_path_in_an_mlflow_record_never_leaves_the_workspace(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sha: str, md5: str, said: str
) -> None:
    """Issue 24: a run's logged DVC md5 of `../../..` made trace read (and a remote fetch write) outside
    the workspace. Digests from MLflow are checked by pattern before any path is built."""
    from mlflow.entities import Dataset, DatasetInput

    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    c = tracking.client(ws)
    exp = c.create_experiment("paths", artifact_location=(tmp_path / "artifacts").as_uri())
    run = c.create_run(exp)
    profile = json.dumps({"manifest_sha256": sha, "dvc_md5": md5})
    ds = Dataset(name="digits@working", digest="3" * 36, source_type="synthreg", source="x", profile=profile)
    c.log_inputs(run.info.run_id, [DatasetInput(ds, [])])
    (d,) = trace_run(ws, run.info.run_id).datasets
    assert not d.resolved and any(said in where for where in d.looked), d.looked
    assert not any(".." in where and "DVC cache (" in where for where in d.looked)


def test_a_trace_says_the_runs_claim_is_unsigned(world: World, ws: Path) -> None:
    """Issue 24: a run that merely claims digits@1.0.0 with the right digest is traced as trained on it;
    the trace says that claim is the run's own, not signed."""
    (d,) = trace_run(ws, world.runs["a"]).datasets
    assert d.claim is not None and d.claim.status == "unsigned"
    assert any(
        n.startswith("UNSIGNED CLAIM: that the run trained on this version is what the run logged")
        for n in d.notes
    ), d.notes
    res = impact(ws, version="digits@1.0.0")
    assert {r.run_id: r.claim.status for r in res.runs if r.claim} == {
        world.runs["a"]: "unsigned",
        world.runs["wrong"]: "unsigned",
    }
    out = runner.invoke(app, ["impact", "--version", "digits@1.0.0", "-w", str(ws)])
    assert "UNSIGNED CLAIM: that run " in out.output and "UNSIGNED" in out.stdout, out.output


def _log_working(ws: Path, tmp_path: Path, profile: str, digest: str = "4" * 36) -> str:
    from mlflow.entities import Dataset, DatasetInput

    c = tracking.client(ws)
    exp = c.create_experiment(f"hostile-{digest[:4]}", artifact_location=(tmp_path / "art").as_uri())
    run = c.create_run(exp)
    ds = Dataset(name="digits@working", digest=digest, source_type="synthreg", source="x", profile=profile)
    c.log_inputs(run.info.run_id, [DatasetInput(ds, [])])
    return run.info.run_id


@pytest.mark.parametrize("profile", ["[1, 2, 3]", '"text"', "not json", "null", '{"sources": "x"}'])
def test_a_profile_that_is_not_an_object_is_named_not_a_crash(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, profile: str
) -> None:
    """Issue 24: a logged profile that is a JSON list crashed trace and impact. It is named as a problem
    (not JSON, or not an object) and shown as unknown; impact by source skips it."""
    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    run_id = _log_working(ws, tmp_path, profile)
    (d,) = trace_run(ws, run_id).datasets
    if profile.startswith("{"):
        assert any("malformed sources" in w for w in d.warnings), d.warnings
    elif profile != "null":
        assert any(w.startswith("the run's logged profile is ") for w in d.warnings), d.warnings
    for args in (["trace", "run", run_id], ["impact", "--source", "sklearn-digits"]):
        out = runner.invoke(app, [*args, "-w", str(ws)])
        assert out.exit_code in (0, 1) and "Traceback" not in out.output, out.output
        assert out.exit_code == 0 or "\nerror: digits@working (manifest sha256 4444" in out.output
    impact(ws, source="sklearn-digits")


def test_a_release_data_folder_linked_out_is_not_read(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: trace and impact read `releases/NAME/X.Y.Z/data/manifest.parquet` through the workspace
    path function: a `data/` linked to a folder outside is named and not read."""
    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    data = ws / "releases" / "digits" / "1.0.0" / "data"
    outside = tmp_path / "outside"
    shutil.move(data, outside)
    data.symlink_to(outside, target_is_directory=True)
    t = trace_run(ws, world.runs["a"])
    assert t.datasets[0].samples is None
    assert any("is a symbolic link" in w and "digits@1.0.0" in w for w in t.warnings), t.warnings
    res = impact(ws, generator="tiny-digits")
    assert "digits@1.0.0" not in [v.release for v in res.versions if v.samples]
    assert any("is a symbolic link" in w for w in res.warnings), res.warnings


def test_a_dvc_cache_outside_the_workspace_is_neither_read_nor_fetched_into(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: the DVC cache folder comes from `.dvc/config`, which an insider can edit; a working
    manifest is not looked for (or fetched) in a cache outside the workspace, and the trace says why."""
    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    outside = tmp_path / "cache"
    md5 = "a" * 32
    planted = outside / "files" / "md5" / md5[:2] / md5[2:]
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"not a manifest")
    sha = hashlib.sha256(b"not a manifest").hexdigest()
    (ws / ".dvc").mkdir(exist_ok=True)
    (ws / ".dvc" / "config").write_text(f"[cache]\n    dir = {outside}\n")
    run_id = _log_working(ws, tmp_path, json.dumps({"manifest_sha256": sha, "dvc_md5": md5}))
    (d,) = trace_run(ws, run_id).datasets
    assert not d.resolved
    assert any("not the DVC cache or remote" in w and "escapes the workspace" in w for w in d.looked), (
        d.looked
    )


@pytest.mark.parametrize("run_id", ["../../etc", "a/b", "a\nb", "", "-x", "é"])
def test_a_run_id_that_is_not_mlflows_is_refused_before_any_lookup(ws: Path, run_id: str) -> None:
    """Issue 24: ids are checked by MLflow's pattern before a store (a file store builds paths) is asked."""
    with pytest.raises(TrackingError, match=r"is not an MLflow run id"):
        trace_run(ws, run_id)
    out = runner.invoke(app, ["trace", "run", run_id, "-w", str(ws)])
    assert out.exit_code in (1, 2) and "Traceback" not in out.output, out.output
