"""Croissant 1.1 JSON-LD with the RAI 1.0 extension and PROV-O provenance, from the release record.

    croissant_jsonld(release, report) -> dict     # the caller writes it to croissant.json

Content URLs are relative to the release folder (``releases/<name>/<version>/``), where ``data/``
holds the manifest and the content-addressed shards. ``mlcroissant validate --jsonld croissant.json``
accepts the result (tests/registry/test_exports.py runs it).
"""

from __future__ import annotations

from typing import Any

from registry.exports import common as c
from registry.records.policy import PolicyReport
from registry.records.release import Release

CROISSANT_1_1 = "http://mlcommons.org/croissant/1.1"
RAI_1_0 = "http://mlcommons.org/croissant/RAI/1.0"

# The standard Croissant 1.1 @context, as mlcroissant 1.1.1 writes it
# (mlcroissant._src.core.rdf.make_context for a 1.1 document), plus the PROV-O namespace.
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
    "prov": "http://www.w3.org/ns/prov#",
}

# Arrow type of a manifest column -> Croissant dataType.
_DATA_TYPES = {
    "string": "sc:Text",
    "int64": "sc:Integer",
    "double": "sc:Float",
    "bool": "sc:Boolean",
    "timestamp[us, tz=UTC]": "sc:DateTime",
}


MANIFEST_ID = "manifest.parquet"
IMAGES_ID = "image-files"


def sanitise_name(name: str) -> str:
    """A name Croissant accepts in every version: letters, digits, '-', '_' and '.'."""
    return c.slug(name).strip("_") or "dataset"


def _shard_id(sha256: str) -> str:
    return f"shard-{sha256[:16]}"


def _distribution(release: Release) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = [
        {
            "@type": "cr:FileObject",
            "@id": MANIFEST_ID,
            "name": "manifest.parquet",
            "description": "One row per generated image: provenance, filter scores, decision and reason.",
            "contentUrl": release.manifest_path,
            "encodingFormat": "application/x-parquet",
            "sha256": release.manifest_sha256,
        }
    ]
    if release.flat_manifest_sha256:  # issue 23: the file `datasets` loads was signed but not listed
        files.append(
            {
                "@type": "cr:FileObject",
                "@id": "manifest-flat.parquet",
                "name": "manifest-flat.parquet",
                "description": "The manifest's rows with each map column as JSON text (for Hugging Face "
                "`datasets`, which has no map type) and `shard` as the released file's path in this "
                "folder (data/shards/<sha256>.tar).",
                "contentUrl": "data/manifest-flat.parquet",
                "encodingFormat": "application/x-parquet",
                "sha256": release.flat_manifest_sha256,
            }
        )
    for s in release.shards:
        files.append(
            {
                "@type": "cr:FileObject",
                "@id": _shard_id(s.sha256),
                "name": s.path.rsplit("/", 1)[-1],
                "description": f"Tar shard of {s.members} PNG images (workspace shard {s.source}).",
                "contentUrl": f"data/{s.path}",
                "contentSize": f"{s.size} B",
                "encodingFormat": "application/x-tar",
                "sha256": s.sha256,
            }
        )
    files.append(
        {
            "@type": "cr:FileSet",
            "@id": IMAGES_ID,
            "name": "images",
            "description": "The generated PNG images inside the shards, named <sample_id>.png.",
            "containedIn": [{"@id": _shard_id(s.sha256)} for s in release.shards],
            "encodingFormat": "image/png",
            "includes": "*.png",
        }
    )
    return files


def _record_sets() -> list[dict[str, Any]]:
    from registry.store.manifest import SCHEMA

    fields = []
    for name in c.RECORD_FIELDS:
        arrow = str(SCHEMA.field(name).type)
        fields.append(
            {
                "@type": "cr:Field",
                "@id": f"samples/{name}",
                "name": name,
                "description": c.column_description(name),
                "dataType": _DATA_TYPES[arrow],
                "source": {"fileObject": {"@id": MANIFEST_ID}, "extract": {"column": name}},
            }
        )
    samples = {
        "@type": "cr:RecordSet",
        "@id": "samples",
        "name": "samples",
        "description": "One record per generated image, from the manifest (accepted and rejected).",
        "key": {"@id": "samples/sample_id"},
        "field": fields,
    }
    images = {
        "@type": "cr:RecordSet",
        "@id": "images",
        "name": "images",
        "description": "The PNG images, keyed by sample id (the member name without .png).",
        "key": {"@id": "images/sample_id"},
        "field": [
            *_image_fields("images"),
        ],
    }
    # Image and label in one record (issue 12): the images joined to the manifest by sample id, so a
    # loader gets the picture with its identity and decision without a join of its own.
    labelled = {
        "@type": "cr:RecordSet",
        "@id": "labelled_images",
        "name": "labelled_images",
        "description": "Each image with its label (the prompted identity) and the filter's decision.",
        "key": {"@id": "labelled_images/sample_id"},
        "field": [
            *_image_fields("labelled_images"),
            *(
                {
                    "@type": "cr:Field",
                    "@id": f"labelled_images/{name}",
                    "name": name,
                    "description": c.column_description(name),
                    "dataType": "sc:Text",
                    "source": {"field": {"@id": f"samples/{name}"}},
                }
                for name in ("identity", "decision")
            ),
        ],
    }
    return [samples, images, labelled]


def _rai(release: Release, report: PolicyReport) -> dict[str, Any]:
    gens = "; ".join(
        f"{c.generator_label(g)} ({g.backend}, {g.pipeline_class}, {g.scheduler}, licence {g.licence}, "
        f"{g.images} images)"
        for g in release.generators
    )
    prompts = "; ".join(release.prompt_templates)
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(release.counts.reasons.items()))
    n = release.counts
    collection = (
        f"Synthetic data: every image was generated by a diffusion model, none was collected. "
        f"Generator(s): {gens}. Prompts from the templates [{prompts}] over {len(n.per_identity)} "
        f"identities, recipe seed {release.seed} (each image's seed is in the manifest). "
        f"{n.total} candidates were generated and filtered: {n.accepted} accepted, {n.rejected} rejected "
        f"({reasons})."
    )
    biases = [c.result_line(r) for r in c.representation_results(report)] or [
        "No representation rule was evaluated."
    ]
    limitations = [
        "Synthetic images show what the generator draws, including its biases, not a real-world "
        "distribution; the identity column is the identity asked for in the prompt.",
    ]
    trained = c.training_sources(release)
    if trained:
        limitations.append(
            "Any gain a downstream model gets from this dataset comes partly from the real data the "
            f"generator was trained on: {', '.join(s.name for s in trained)}."
        )
    limitations += [
        c.result_line(r)
        for r in report.results
        if r.status in ("warn", "fail", "waived", "not run", "not applicable")
    ]
    limitations += c.out_of_scope(release, report)
    use = release.intended_use
    use_cases = [
        f"Declared purposes: {', '.join(use.purposes)}; commercial use "
        f"{'declared' if use.commercial else 'not declared'}."
    ]
    if use.description:
        use_cases.insert(0, use.description)
    evaluation = [s for s in release.sources if s.role == "evaluation"]
    if evaluation:
        use_cases.append(
            "Evaluate downstream models on real held-out data never seen by the generator: "
            + ", ".join(c.describe_source(s) for s in evaluation)
        )
    privacy_rules = [
        r
        for r in report.results
        if r.kind in ("prompt-personal-data", "prompt-deny") or r.rule_id.startswith("privacy.")
    ]
    identities = ", ".join(sorted(n.per_identity)[:20]) + (", ..." if len(n.per_identity) > 20 else "")
    personal = [
        f"The images are synthetic; {len(n.per_identity)} identities ({identities}). A generator trained "
        "on real data can reproduce it: the memorised-copy filter and the rules listed here check for that.",
        *(c.result_line(r) for r in privacy_rules),
    ]
    timeframe = [release.created_at.isoformat()]  # generation times are in the audit log, not the record
    manipulation = (
        "Images are stored as the generator made them (PNG, lossless), each with an XMP marking "
        "(IPTC digitalSourceType trainedAlgorithmicMedia, sample id, generator weights digest); no "
        "augmentation, cropping or editing. Filtering removes nothing: it records a decision and a "
        "reason."
    )
    return {
        "rai:dataCollection": collection,
        "rai:dataCollectionType": ["Software Collection", "Others"],
        "rai:dataCollectionRawData": "No raw data was collected; the real sources behind the generator and "
        "the filters: " + "; ".join(c.describe_source(s, roles) for _, s, roles in c.source_groups(release)),
        "rai:dataPreprocessingProtocol": [
            f"Filter reason {r} ({c.REASONS.get(r, 'see the manifest')}): {k} images"
            for r, k in sorted(release.counts.reasons.items())
        ]
        + ["Rejected images stay in the manifest and shards; select decision = 'accepted' to train."],
        "rai:dataBiases": biases,
        "rai:dataLimitations": limitations,
        "rai:dataUseCases": use_cases,
        "rai:personalSensitiveInformation": personal,
        # The RAI 1.0 properties a synthetic set answers differently from a collected one (issue 12 found
        # them missing); each from the record, so the answer cannot drift from what was released.
        "rai:dataCollectionMissingData": (
            f"No value is missing by construction: {n.total} of the planned images were generated and all "
            f"stay in the manifest; {n.rejected} rejected by the filters keep their reason. The policy "
            "rule provenance.complete checks that no digest, seed, prompt or licence is missing: "
            + report_status(report, "provenance")
        ),
        # Generated before validation, released after: the span the record can vouch for. Written under
        # the RAI 1.0 vocabulary's name (croissant_rai.ttl) and under the one mlcroissant 1.1.1 reads
        # (constants.py: dataCollectionTimeFrame), which differ; likewise the manipulation protocol.
        "rai:dataCollectionTimeframe": timeframe,
        "rai:dataCollectionTimeFrame": timeframe,
        "rai:dataImputationProtocol": "None: no value was imputed; every row is one generated image as made.",
        "rai:dataManipulationProtocol": manipulation,
        "rai:dataDataManipulationProtocol": manipulation,
        "rai:dataAnnotationProtocol": [
            "Labels are not annotated: the identity column is the identity the prompt asked for. A "
            "classifier trained on real data checks it (identity_pred, identity_confidence); disagreement "
            "rejects the image (reason identity_mismatch or low_confidence)."
        ],
        "rai:dataAnnotationPlatform": ["synthreg filter (automatic, no human annotator)"],
        "rai:dataAnnotationAnalysis": [c.result_line(r) for r in report.results if r.kind == "quality"]
        or ["No quality rule was evaluated."],
        "rai:annotationsPerItem": "1 (the prompted identity), checked by 1 classifier",
        "rai:annotatorDemographics": ["None: no human annotated the data."],
        "rai:dataSocialImpact": (
            "Synthetic images can stand in for personal data in training, and can carry the generator's "
            "biases into models trained on them; the representation rules and waivers listed under "
            f"dataBiases say what was measured. Declared purposes: {', '.join(use.purposes)}."
        ),
        "rai:dataReleaseMaintenancePlan": (
            f"Versions are immutable and signed ({c.ref(release)}); a correction is a new version "
            "(`synthreg derive`), and a version found unfit is withdrawn (`synthreg withdraw`), which "
            "`synthreg trace`, `impact` and the HTML report show. Released by " + release.actor + "."
        ),
        "rai:machineAnnotationTools": [
            f"{c.generator_label(g)}: {g.pipeline_class} with {g.scheduler}, "
            f"weights sha256 {g.weights_digest}"
            for g in release.generators
        ],
    }


def report_status(report: PolicyReport, kind: str) -> str:
    found = [f"{r.rule_id} {r.status}" for r in report.results if r.kind == kind]
    return ", ".join(found) if found else f"no {kind} rule was evaluated"


def _prov(release: Release) -> dict[str, Any]:
    derived = []
    for key, s, roles in c.derived_sources(release):
        node: dict[str, Any] = {
            "@type": "prov:Entity",
            "@id": f"urn:synthreg:source:{key}",
            "prov:label": s.name,
            "name": s.name,
            "license": c.spdx_url(s.licence) or s.licence,
            "description": f"role {', '.join(roles)}; status {s.status}"
            + (f"; {s.version}" if s.version else ""),
        }
        if s.url:
            node["url"] = s.url
        if s.digest:
            node["sha256"] = s.digest
        derived.append(node)
    agents = [{"@type": "prov:Agent", "prov:label": c.generator_label(g)} for g in release.generators]
    # Two activities: generate made the images (its time is not in the release record); release made
    # this version, at created_at, by the actor.
    activities = [
        {"@type": "prov:Activity", "prov:label": "synthreg generate", "prov:wasAssociatedWith": agents},
        {
            "@type": "prov:Activity",
            "prov:label": "synthreg release",
            "prov:startedAtTime": release.created_at.isoformat(),
            "prov:wasAssociatedWith": {"@type": "prov:Agent", "prov:label": release.actor},
        },
    ]
    return {
        "prov:wasGeneratedBy": activities,
        "prov:wasDerivedFrom": derived,
        "prov:wasAttributedTo": agents,
    }


def release_url(release: Release) -> str:
    """An absolute URI naming the release by name, version and content (issue 12 found a relative path).
    The record holds no public address (a registry may publish anywhere), so pass ``url`` to
    ``croissant_jsonld`` where there is one."""
    return f"urn:synthreg:release:{release.name}@{release.version}:{release.manifest_sha256}"


def croissant_jsonld(release: Release, report: PolicyReport, url: str | None = None) -> dict[str, Any]:
    """The release as Croissant 1.1 + RAI 1.0. ``url``: where the release is published (default: a
    ``urn:synthreg:release:NAME@X.Y.Z:<manifest sha256>`` naming it by content)."""
    c.check_report(release, report)
    licence = c.spdx_url(release.dataset_licence) or release.dataset_licence
    n = release.counts
    gens = ", ".join(c.generator_label(g) for g in release.generators)
    description = (
        f"Synthetic image dataset {c.ref(release)} made with synthreg: {n.total} images generated by "
        f"{gens} for {len(n.per_identity)} identities, {n.accepted} accepted by the filters. "
        + (release.intended_use.description or "")
    ).strip()
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CROISSANT_1_1, RAI_1_0],
        "name": sanitise_name(release.name),
        "alternateName": c.ref(release),
        "description": description,
        "license": licence,
        "url": url or release_url(release),
        "creator": {"@type": "sc:Person", "name": release.actor},
        "publisher": {"@type": "sc:Person", "name": release.actor},
        "version": release.version,
        "datePublished": release.created_at.isoformat(),
        "citeAs": c.bibtex(release),
        "keywords": ["synthetic", "diffusion", "image-classification", "synthreg"],
        "distribution": _distribution(release),
        "recordSet": _record_sets(),
    }
    doc.update(_rai(release, report))
    doc.update(_prov(release))
    return doc


def _image_fields(record_set: str) -> list[dict]:
    """The sample id (from the member name, joined to the manifest) and the image of a shard member: the
    same two fields in the ``images`` and ``labelled_images`` record sets."""
    return [
        {
            "@type": "cr:Field",
            "@id": f"{record_set}/sample_id",
            "name": "sample_id",
            "description": "Sample id, from the member name.",
            "dataType": "sc:Text",
            "source": {
                "fileSet": {"@id": IMAGES_ID},
                "extract": {"fileProperty": "filename"},
                "transform": {"regex": "^(.+?)(?:\\.png)?$"},
            },
            "references": {"field": {"@id": "samples/sample_id"}},
        },
        {
            "@type": "cr:Field",
            "@id": f"{record_set}/image",
            "name": "image",
            "description": "The generated image.",
            "dataType": "sc:ImageObject",
            "source": {"fileSet": {"@id": IMAGES_ID}, "extract": {"fileProperty": "content"}},
        },
    ]
