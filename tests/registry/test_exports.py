"""The release exports: dataset card, Croissant 1.1 + RAI (checked by mlcroissant), W3C PROV."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from registry.exports import croissant_jsonld, prov_document, prov_json, render_card
from registry.records.dataset import IntendedUse, SourceRef
from registry.records.policy import Evidence, PolicyReport, RuleResult, Waiver
from registry.records.release import Counts, GeneratorUse, Release, ShardRef

WEIGHTS = "58ca88a3eea0d21692b89f428dba1fdc2d7ad7306bb68d0ede4357890661f6d8"
MANIFEST = "145791640e9a25167b6f67b9b9098997a7fe547396465e7c92043adf203084aa"
REPORT = "7d1f0c3f4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"
SHARDS = ("a1" * 32, "b2" * 32)
UCI = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
INTENDED = IntendedUse(
    commercial=False,
    purposes=["research", "education", "training-a-model"],
    description="Pre-training and evaluating small digit classifiers; demonstrating synthetic-data "
    "governance.",
)
WAIVER = Waiver(
    rule_id="quality.identity-consistency",
    scope="digits",
    reason="tiny-digits draws ambiguous 7s at 8 steps; accepted for the pipeline demo",
    approver="release-manager@example.org",
    expires=date(2031, 1, 1),
)
TRAIN = SourceRef(
    name="sklearn-digits",
    version="train split (1,437 images)",
    digest="9ef97b5cbe79bfd869bb71b082afc043696e8c2ccc12a473343f1b3889ced9aa",
    licence="CC-BY-4.0",
    url=UCI,
    role="generator-training",
)
HELD_OUT = SourceRef(
    name="sklearn-digits-held-out",
    version="held-out split (360 images), never seen by the generator",
    digest="c8057aa48b256370acc75b3548a06e88af50265007248b5737b6a1daca71b4e0",
    licence="CC-BY-4.0",
    url=UCI,
    role="evaluation",
)
ATTRIBUTION = [
    "generator tiny-digits, licensed under Creative Commons Attribution 4.0 International "
    "(https://creativecommons.org/licenses/by/4.0/legalcode)",
    "generator training source sklearn-digits, licensed under Creative Commons Attribution 4.0 "
    "International (https://creativecommons.org/licenses/by/4.0/legalcode)",
]


def _result(rule_id: str, kind: str, status: str = "pass", severity: str = "error", **kw) -> RuleResult:
    return RuleResult(
        rule_id=rule_id,
        pack="synthreg-default",
        kind=kind,
        severity=severity,
        status=status,
        message=kw.pop("message", f"{rule_id} holds"),
        **kw,
    )


def make_report(extra: list[RuleResult] | None = None) -> PolicyReport:
    results = [
        _result("licence.known", "licence-known", measured=0, threshold=0),
        _result("licence.intended-use", "licence-use", measured=0, threshold=0),
        _result(
            "licence.attribution",
            "attribution",
            severity="warn",
            message="2 attribution duties collected for the dataset card",
            measured=2,
            evidence=Evidence(
                count=2,
                details={
                    "duties": [
                        {"subject": "generator tiny-digits", "licence": "CC-BY-4.0", "share_alike": False},
                        {"subject": "source sklearn-digits", "licence": "CC-BY-4.0", "share_alike": False},
                    ]
                },
            ),
        ),
        _result("sources.not-withdrawn", "source-withdrawn", measured=0, threshold=0),
        _result("prompt.personal-data", "prompt-personal-data", measured=0, threshold=0),
        _result(
            "bias.observed-balance",
            "representation",
            status="warn",
            severity="warn",
            message="observed stroke is unbalanced overall: in the dataset the shares are "
            "{'bold': 0.7427, 'thin': 0.2573} (min/max 0.35 < 0.8); 1 group(s) offend",
            measured=0.3464,
            threshold=0.8,
            evidence=Evidence(count=739, sample_ids=["digits-0-000000-18434928"]),
        ),
        _result("bias.requested-balance", "representation", measured=0.94, threshold=0.8),
        _result(
            "quality.identity-consistency",
            "quality",
            status="waived",
            message="identity_consistency = 0.9400 (940/1000); required >= 0.95",
            measured=0.94,
            threshold=">= 0.95",
            waiver=WAIVER,
        ),
        _result("privacy.memorised-copies", "quality", measured=0.0, threshold="<= 0.01"),
        _result("leakage.eval-split", "leakage", measured=0, threshold=0),
        *(extra or []),
    ]
    return PolicyReport(
        dataset="digits",
        manifest="data/digits/filtered/manifest.parquet",
        manifest_sha256=MANIFEST,
        packs={
            "policies/packs/default.yaml": "01f07b749ec7381068d3bf89f8e1bf322db135d8066c8728fc93fa97e2e6a071"
        },
        licence_kb_sha256="44c9c4b5b93fe78abd82173542ee827f26c378f49eb3fe2766e1788cb442dbf0",
        intended_use=INTENDED,
        results=results,
        passed=True,
    )


def make_release(report: PolicyReport | None = None, **overrides) -> Release:
    report = report or make_report()
    per_identity = {str(d): {"accepted": 94, "rejected": 6} for d in range(10)}
    fields = {
        "name": "digits",
        "version": "1.0.0",
        "manifest_sha256": MANIFEST,
        "shards": [
            ShardRef(
                path=f"shards/{sha}.tar",
                source=f"data/digits/candidates/shards/shard-0000{i}.tar",
                sha256=sha,
                size=512_000 + i,
                members=500,
            )
            for i, sha in enumerate(SHARDS)
        ],
        "counts": Counts(
            total=1000,
            accepted=940,
            rejected=60,
            per_identity=per_identity,
            reasons={"identity_mismatch": 41, "low_confidence": 19, "ok": 940},
        ),
        "generators": [
            GeneratorUse(
                name="tiny-digits",
                backend="tiny-digits",
                weights_digest=WEIGHTS,
                licence="CC-BY-4.0",
                pipeline_class="TinyDigitsPipeline",
                scheduler="DDIMScheduler",
                images=1000,
            )
        ],
        "sources": [TRAIN.model_copy(update={"role": "filtering"}), HELD_OUT, TRAIN],
        "prompt_templates": ["a handwritten digit {identity} with a {stroke} stroke"],
        "seed": 20240607,
        "policy_report_sha256": REPORT,
        "policy_passed": report.passed,
        "policy_results": {r.rule_id: r.status for r in report.results},
        "waivers": [r.waiver for r in report.results if r.waiver],
        "intended_use": INTENDED,
        "dataset_licence": "CC-BY-4.0",
        "attribution": ATTRIBUTION,
        "git_commit": "8760801c0ffee0ddba11deadbeefcafe12345678",
        "created_at": datetime(2026, 11, 22, 6, 0, 0, tzinfo=UTC),
        "actor": "Ada Lovelace",
    }
    return Release(**(fields | overrides))


# --- dataset card ---------------------------------------------------------------------------------


def test_card_has_every_section_rule_and_attribution():
    report = make_report()
    card = render_card(make_release(report), report)
    assert card.startswith("---\nlicense: cc-by-4.0\n")
    front = card.split("---\n")[1]
    for line in ("pretty_name:", "- 1K<n<10K", "- image-classification", "- synthetic"):
        assert line in front
    # What a reader decides on comes first (issue 12); the schema table last.
    headings = [
        "# Dataset Card for digits@1.0.0",
        "## Dataset Description",
        "### Dataset Summary",
        "## Uses",
        "### Intended Use",
        "### Out-of-Scope Use",
        "## Licensing Information",
        "## Bias, Risks and Limitations",
        "### Waivers",
        "## Dataset Creation",
        "### Source Data",
        "### Generation method",
        "### Filtering",
        "## Citation",
        "## Provenance",
        "## Dataset Structure",
        "### Data Fields",
        "### Data Files",
        "### Counts",
    ]
    assert [h for h in card.splitlines() if h.startswith("#") and h in headings] == headings
    for line in ATTRIBUTION:
        assert f"- {line}\n" in card
    for r in report.results:
        assert f"`{r.rule_id}`" in card
    # Sources with licence, url, status and role, and the real data behind the generator.
    assert "| sklearn-digits-held-out | held-out split" in card
    assert "| evaluation | CC-BY-4.0 | " + UCI + " | active |" in card
    assert "generator-training" in card
    assert "comes partly from the real data the generator was trained on" in card
    # Generation, filtering, counts, waivers, citation and the provenance footer.
    wrapped = "<code>" + "<wbr>".join(WEIGHTS[i : i + 16] for i in range(0, 64, 16)) + "</code>"
    assert wrapped in card and "DDIMScheduler" in card and "TinyDigitsPipeline" in card
    assert "`a handwritten digit {identity} with a {stroke} stroke`" in card
    assert "`20240607`" in card
    assert "| `identity_mismatch` | 41 |" in card
    assert "| `7` | 94 | 6 | 100 |" in card
    assert "| **all** | 940 | 60 | 1000 |" in card
    assert "| `quality.identity-consistency` | digits | tiny-digits draws" in card
    assert "release-manager@example.org" in card
    assert "@misc{digits_1_0_0," in card and f"manifest sha256 {MANIFEST}" in card
    assert f"`{REPORT}`" in card and "`release.dsse.json`" in card and "8760801c0ffee" in card
    assert "Commercial use" in card and "biometric" in card  # out of scope: not declared


def test_card_lists_licence_restrictions_from_the_evidence():
    conflict = _result(
        "licence.flux-outputs",
        "licence-use",
        status="waived",
        message="generator flux is licensed FLUX.1-dev, which does not allow commercial",
        evidence=Evidence(
            count=1,
            details={
                "conflicts": [
                    {
                        "subject": "generator flux",
                        "licence": "FLUX.1-dev-Non-Commercial-1.1.1",
                        "use": "surveillance",
                        "citation": "LICENSE-FLUX1-dev §4(a)",
                    }
                ]
            },
        ),
        waiver=WAIVER.model_copy(update={"rule_id": "licence.flux-outputs"}),
    )
    report = make_report([conflict])
    card = render_card(make_release(report), report)
    out_of_scope = card.split("### Out-of-Scope Use")[1].split("## Bias")[0]
    assert (
        "generator flux is licensed FLUX.1-dev-Non-Commercial-1.1.1, which does not allow surveillance"
        in (out_of_scope)
    )


MARKUP = ["<img src=x onerror=alert(1)>", "<iframe src=//evil>", "</table><script>alert(2)</script>", "<!--"]


def test_markdown_exports_show_markup_from_data_as_text():
    """Issue 24: a generator name or prompt holding HTML went raw into card.md / README.md (rendered as
    HTML by the Hub and by most Markdown viewers). Every value from a record is escaped; the card's own
    markup (<code>, <wbr>) and a `<=` in a threshold stay as they are."""
    from registry.exports.policy_md import render_markdown

    hostile = _result(
        "prompt.deny", "prompt", status="fail", message=f"prompt {MARKUP[3]} {MARKUP[2]} denied"
    )
    report = make_report([hostile])
    gen = (
        make_release(report).generators[0].model_copy(update={"name": MARKUP[0], "pipeline_class": MARKUP[1]})
    )
    release = make_release(report, generators=[gen], prompt_templates=[f"a digit {{identity}} {MARKUP[2]}"])
    card, md = render_card(release, report), render_markdown(report)
    for text in (card, md):
        for raw in MARKUP:
            assert raw not in text
        assert "<script" not in text and "<img" not in text and "<iframe" not in text and "<!--" not in text
    assert "&lt;img src=x onerror=alert(1)>" in card and "&lt;/table>&lt;script>" in md
    assert "<code>" in card and "<wbr>" in card  # the renderer's own markup
    assert "| <= 0.01 |" in md  # a threshold's `<=` is text, left as it is


def test_card_refuses_a_report_for_another_manifest():
    report = make_report().model_copy(update={"manifest_sha256": "0" * 64})
    with pytest.raises(ValueError, match="policy report is for manifest 000000000000"):
        render_card(make_release(), report)


def test_card_for_a_licence_outside_the_hub_list():
    report = make_report()
    card = render_card(make_release(report, dataset_licence="Stability-AI-Community"), report)
    assert card.startswith('---\nlicense: other\nlicense_name: "Stability-AI-Community"\n')


# --- Croissant ------------------------------------------------------------------------------------


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "croissant.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_croissant_passes_mlcroissant(tmp_path: Path):
    import mlcroissant as mlc

    report = make_report()
    doc = croissant_jsonld(make_release(report), report)
    path = _write(tmp_path, doc)
    # Constructing the Dataset validates the metadata; it reads no data file (none exists here).
    dataset = mlc.Dataset(jsonld=path)
    meta = dataset.metadata
    assert meta.name == "digits" and meta.version == "1.0.0"
    assert meta.license == ["https://spdx.org/licenses/CC-BY-4.0.html"]
    assert [r.uuid for r in meta.record_sets] == ["samples", "images", "labelled_images"]
    assert {f.name for f in meta.record_sets[0].fields} == {
        "sample_id",
        "identity",
        "prompt",
        "seed",
        "weights_digest",
        "decision",
        "reason",
        "image_sha256",
    }
    assert meta.data_biases and "bias.observed-balance" in meta.data_biases[0]
    assert meta.data_collection_type == ["Software Collection", "Others"]
    assert meta.machine_annotation_tools and WEIGHTS in meta.machine_annotation_tools[0]
    # every RAI 1.0 property is filled (issue 12 found seven missing), read back by mlcroissant
    rai = [
        "data_collection", "data_collection_type", "data_collection_missing_data", "data_collection_raw_data",
        "data_collection_timeframe", "data_preprocessing_protocol", "data_imputation_protocol",
        "data_manipulation_protocol", "data_release_maintenance_plan", "personal_sensitive_information",
        "data_annotation_protocol", "data_annotation_platform", "data_annotation_analysis",
        "annotations_per_item", "annotator_demographics", "machine_annotation_tools", "data_social_impact",
        "data_biases", "data_limitations", "data_use_cases",
    ]  # fmt: skip
    assert [p for p in rai if not getattr(meta, p)] == []
    assert len(meta.data_collection_timeframe) == 1  # the release time: generation times are in the audit log
    assert meta.url == f"urn:synthreg:release:digits@1.0.0:{MANIFEST}"  # absolute
    assert [p.name for p in meta.creators] == ["Ada Lovelace"]  # the release record's actor
    assert [p.name for p in meta.publisher] == ["Ada Lovelace"]
    assert not meta.ctx.issues.errors

    cli = Path(sys.executable).with_name("mlcroissant")
    proc = subprocess.run(
        [str(cli), "validate", "--jsonld", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_croissant_content():
    report = make_report()
    doc = croissant_jsonld(make_release(report), report)
    assert doc["@type"] == "sc:Dataset"
    assert doc["@context"]["prov"] == "http://www.w3.org/ns/prov#"
    assert doc["@context"]["rai"] == "http://mlcommons.org/croissant/RAI/"
    assert doc["conformsTo"] == [
        "http://mlcommons.org/croissant/1.1",
        "http://mlcommons.org/croissant/RAI/1.0",
    ]
    files = {d["@id"]: d for d in doc["distribution"]}
    assert files["manifest.parquet"]["contentUrl"] == "data/manifest.parquet"
    assert files["manifest.parquet"]["encodingFormat"] == "application/x-parquet"
    assert files["manifest.parquet"]["sha256"] == MANIFEST
    tars = [d for d in doc["distribution"] if d.get("encodingFormat") == "application/x-tar"]
    assert [t["sha256"] for t in tars] == list(SHARDS)
    assert tars[0]["contentUrl"] == f"data/shards/{SHARDS[0]}.tar"
    assert files["image-files"]["@type"] == "cr:FileSet"
    assert files["image-files"]["containedIn"] == [{"@id": t["@id"]} for t in tars]
    assert (files["image-files"]["includes"], files["image-files"]["encodingFormat"]) == (
        "*.png",
        "image/png",
    )
    samples = doc["recordSet"][0]
    types = {f["name"]: f["dataType"] for f in samples["field"]}
    assert types["seed"] == "sc:Integer" and types["prompt"] == "sc:Text"
    assert all(f["source"]["fileObject"] == {"@id": "manifest.parquet"} for f in samples["field"])
    assert "bias.observed-balance" in doc["rai:dataBiases"][0]
    assert "Synthetic data" in doc["rai:dataCollection"]
    # PROV-O: the generator as agent, the sources the dataset is derived from (not the evaluation split).
    generate = doc["prov:wasGeneratedBy"][0]
    assert generate["@type"] == "prov:Activity" and generate["prov:label"] == "synthreg generate"
    assert doc["prov:wasGeneratedBy"][1]["prov:startedAtTime"] == "2026-11-22T06:00:00+00:00"
    assert doc["prov:wasAttributedTo"] == [
        {"@type": "prov:Agent", "prov:label": f"tiny-digits@{WEIGHTS[:12]}"}
    ]
    derived = doc["prov:wasDerivedFrom"]
    assert [(d["name"], d["url"]) for d in derived] == [("sklearn-digits", UCI)]
    assert "filtering, generator-training" in derived[0]["description"]
    assert doc["citeAs"].startswith("@misc{digits_1_0_0,")
    assert doc["datePublished"] == "2026-11-22T06:00:00+00:00"


def _release_folder(tmp_path: Path) -> tuple[Release, PolicyReport]:
    """A release folder with a real manifest and two real shards of PNG images."""
    import io
    import tarfile

    from PIL import Image

    from registry.core.digests import sha256_bytes, sha256_file
    from registry.records.dataset import SampleRecord
    from registry.store.manifest import write_manifest

    data = tmp_path / "data"
    (data / "shards").mkdir(parents=True)
    records, shards = [], []
    for s in range(2):
        tar_bytes = io.BytesIO()
        with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
            for k in range(2):
                i = 2 * s + k
                png = io.BytesIO()
                Image.new("L", (16, 16), color=40 * i).save(png, format="PNG")
                member = f"digits-{i}-00000{i}-0000000{i}.png"
                info = tarfile.TarInfo(member)
                info.size = len(png.getvalue())
                tar.addfile(info, io.BytesIO(png.getvalue()))
                records.append(
                    SampleRecord(
                        dataset="digits",
                        sample_id=member.removesuffix(".png"),
                        index=i,
                        identity=str(i),
                        attributes={"stroke": "bold"},
                        prompt=f"a handwritten digit {i} with a bold stroke",
                        negative_prompt="",
                        seed=1011947721810478656 + i,
                        steps=20,
                        guidance=2.0,
                        width=16,
                        height=16,
                        generator_name="tiny-digits",
                        generator_backend="tiny-digits",
                        generator_source="generators/tiny_digits/model",
                        weights_digest=WEIGHTS,
                        generator_licence="CC-BY-4.0",
                        pipeline_class="TinyDigitsPipeline",
                        scheduler="DDIMScheduler",
                        scheduler_config_digest="c" * 64,
                        image_sha256=sha256_bytes(png.getvalue()),
                        phash="0" * 16,
                        shard=f"data/digits/candidates/shards/shard-0000{s}.tar",
                        member=member,
                        batch=0,
                        batch_size=4,
                        library_versions={"torch": "2.13.0"},
                        device="cpu",
                        decision="accepted" if i < 3 else "rejected",
                        reason="ok: passed every check" if i < 3 else "low_contrast: pixel std 0.000 < 0.1",
                    )
                )
        digest = sha256_bytes(tar_bytes.getvalue())
        (data / "shards" / f"{digest}.tar").write_bytes(tar_bytes.getvalue())
        shards.append(
            ShardRef(
                path=f"shards/{digest}.tar",
                source=f"data/digits/candidates/shards/shard-0000{s}.tar",
                sha256=digest,
                size=len(tar_bytes.getvalue()),
                members=2,
            )
        )
    write_manifest(records, data / "manifest.parquet")
    manifest = sha256_file(data / "manifest.parquet")
    report = make_report().model_copy(update={"manifest_sha256": manifest})
    return make_release(report, manifest_sha256=manifest, shards=shards), report


# mlcroissant leaves the extracted PNGs open (its field.py reads them with an unclosed open()).
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_croissant_records_load_from_the_release_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The record sets really read the manifest columns and the PNGs inside the shards."""
    import mlcroissant as mlc
    from etils import epath
    from mlcroissant._src.core import constants
    from mlcroissant._src.operation_graph.operations import extract

    # Keep mlcroissant's download/extract cache (default ~/.cache/croissant) inside the test.
    monkeypatch.setattr(extract, "EXTRACT_PATH", epath.Path(tmp_path / "cache" / "extract"))
    monkeypatch.setattr(constants, "DOWNLOAD_PATH", epath.Path(tmp_path / "cache" / "download"))
    release, report = _release_folder(tmp_path)
    path = _write(tmp_path, croissant_jsonld(release, report))
    dataset = mlc.Dataset(jsonld=path)
    samples = list(dataset.records("samples"))
    assert [r["samples/sample_id"] for r in samples] == [
        f"digits-{i}-00000{i}-0000000{i}".encode() for i in range(4)
    ]
    assert samples[1]["samples/seed"] == 1011947721810478657
    assert [r["samples/decision"] for r in samples] == [b"accepted"] * 3 + [b"rejected"]
    images = {r["images/sample_id"]: r["images/image"] for r in dataset.records("images")}
    assert set(images) == {r["samples/sample_id"] for r in samples}
    assert all(image.size == (16, 16) for image in images.values())
    # image and label in one record (issue 12), joined by sample id
    labelled = {r["labelled_images/sample_id"]: r for r in dataset.records("labelled_images")}
    assert set(labelled) == set(images)
    for r in samples:
        row = labelled[r["samples/sample_id"]]
        assert (row["labelled_images/identity"], row["labelled_images/decision"]) == (
            r["samples/identity"],
            r["samples/decision"],
        )
        assert row["labelled_images/image"].size == (16, 16)


def test_awkward_names_are_sanitised(tmp_path: Path):
    """Spaces and slashes in names become safe ids: Croissant still validates, PROV raises no warning."""
    import mlcroissant as mlc

    report = make_report()
    odd = HELD_OUT.model_copy(update={"name": "held out / v2"})
    release = make_release(report, name="Digits v2", actor="CI bot <ci@example.org>", sources=[TRAIN, odd])
    doc = croissant_jsonld(release, report)
    assert doc["name"] == "Digits_v2"
    mlc.Dataset(jsonld=_write(tmp_path, doc))
    data = json.loads(prov_json(release))  # pytest turns a prov warning into an error
    assert "synthreg:source/held_out___v2" in data["entity"]
    assert "synthreg:actor/CI_bot__ci@example.org_" in data["agent"]


# --- PROV -----------------------------------------------------------------------------------------


def test_prov_json_is_the_library_s_text_written_with_the_document_let_go(monkeypatch: pytest.MonkeyPatch):
    """``prov_json`` is the text ``ProvDocument.serialize`` writes, byte for byte, but the document it
    built is gone while the text is written (issue 22: at 10,000 shards the document is 47 MB of objects)."""
    import weakref

    from registry.exports import prov as prov_module

    release = make_release()
    built: list[weakref.ref] = []
    alive: list[bool] = []
    real_document, real_dumps = prov_module.prov_document, prov_module.json.dumps

    def document(*args, **kwargs):
        doc = real_document(*args, **kwargs)
        built.append(weakref.ref(doc))
        return doc

    def dumps(*args, **kwargs):
        alive.append(built[-1]() is not None)
        return real_dumps(*args, **kwargs)

    monkeypatch.setattr(prov_module, "prov_document", document)
    monkeypatch.setattr(prov_module.json, "dumps", dumps)
    text = prov_json(release)
    monkeypatch.undo()
    assert (len(built), alive) == (1, [False])
    assert text == prov_document(release).serialize(format="json", indent=2, sort_keys=True)


def test_prov_round_trips_and_has_the_relations():
    from prov.model import (
        ProvAgent,
        ProvAssociation,
        ProvDerivation,
        ProvDocument,
        ProvGeneration,
        ProvUsage,
    )

    release = make_release()
    doc = prov_document(release)
    text = prov_json(release)
    assert ProvDocument.deserialize(content=text, format="json") == doc
    assert prov_json(release) == text  # stable

    def ids(record, *attrs) -> tuple[str, ...]:
        values = dict(record.formal_attributes)
        return tuple(str(values[doc.valid_qualified_name(a)]) for a in attrs)

    agents = {str(a.identifier): a for a in doc.get_records(ProvAgent)}
    generator = agents[f"synthreg:generator/tiny-digits@{WEIGHTS[:12]}"]
    assert "prov:SoftwareAgent" in {str(t) for t in generator.get_asserted_types()}
    assert "synthreg:actor/Ada_Lovelace" in agents

    associations = {ids(r, "prov:activity", "prov:agent") for r in doc.get_records(ProvAssociation)}
    assert ("synthreg:digits@1.0.0/generate", str(generator.identifier)) in associations
    assert ("synthreg:digits@1.0.0/release", "synthreg:actor/Ada_Lovelace") in associations

    generations = {ids(r, "prov:entity", "prov:activity") for r in doc.get_records(ProvGeneration)}
    assert ("synthreg:digits@1.0.0", "synthreg:digits@1.0.0/release") in generations

    derivations = {ids(r, "prov:generatedEntity", "prov:usedEntity") for r in doc.get_records(ProvDerivation)}
    assert ("synthreg:digits@1.0.0", "synthreg:source/sklearn-digits") in derivations
    assert (f"synthreg:weights/{WEIGHTS}", "synthreg:source/sklearn-digits") in derivations
    # The held-out split is compared against, not derived from: validate used it.
    assert ("synthreg:digits@1.0.0", "synthreg:source/sklearn-digits-held-out") not in derivations

    usages = {ids(r, "prov:activity", "prov:entity") for r in doc.get_records(ProvUsage)}
    assert ("synthreg:digits@1.0.0/generate", f"synthreg:weights/{WEIGHTS}") in usages
    assert ("synthreg:digits@1.0.0/filter", "synthreg:digits@1.0.0/candidates") in usages
    assert ("synthreg:digits@1.0.0/filter", "synthreg:source/sklearn-digits") in usages
    assert ("synthreg:digits@1.0.0/validate", "synthreg:source/sklearn-digits-held-out") in usages
    assert ("synthreg:digits@1.0.0/release", f"synthreg:policy-report/{REPORT}") in usages
    assert (
        "synthreg:digits@1.0.0/release",
        "synthreg:waiver/quality.identity-consistency/2031-01-01",
    ) in usages

    data = json.loads(text)
    assert data["prefix"]["synthreg"] == "https://synthreg.dev/ns/"
    version = data["entity"]["synthreg:digits@1.0.0"]
    assert version["synthreg:manifest_sha256"] == MANIFEST
    source = data["entity"]["synthreg:source/sklearn-digits-held-out"]
    assert (source["synthreg:licence"], source["synthreg:url"], source["synthreg:status"]) == (
        "CC-BY-4.0",
        UCI,
        "active",
    )
    assert set(data["activity"]) == {
        f"synthreg:digits@1.0.0/{a}" for a in ("generate", "filter", "validate", "release")
    }
