"""W3C PROV for a release, built with the ``prov`` library: who made what from which sources.

    prov_document(release) -> prov.model.ProvDocument
    prov_json(release) -> str                  # PROV-JSON; the caller writes it to prov.json

The graph (``synthreg:`` identifiers, ``<v>`` = ``<name>@<version>``)::

    source/*  --used-->  generate (assoc. generator agent)  --generated-->  <v>/candidates, shards
    weights   --used-->  generate;     weights wasDerivedFrom the generator's training sources
    candidates --used--> filter  --generated-->  <v>/manifest      (filtering sources used too)
    manifest   --used--> validate --generated--> policy-report     (evaluation sources used too)
    policy report, manifest, shards, waivers --used--> release (assoc. actor) --generated--> <v>

``<v>`` wasDerivedFrom its manifest and every source it is made from (conditioning, filtering,
training and the generator's training data), so an impact query on a source finds it in one hop. An
evaluation source is used by validate (the leakage check) but the dataset is not derived from it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from registry.exports import common as c
from registry.records.release import Release

if TYPE_CHECKING:
    from prov.model import ProvDocument

SYNTHREG_NS = "https://synthreg.dev/ns/"
PROV_NS = "http://www.w3.org/ns/prov#"


def _local(text: str) -> str:
    """A QName local part PROV-N can write: letters, digits and . _ - @ kept, others -> '_'."""
    return re.sub(r"[^A-Za-z0-9._@-]", "_", text)


def _attrs(**values: Any) -> dict[Any, Any]:
    """``synthreg:``-prefixed attributes, dropping the ones that are None."""
    return {f"synthreg:{k}": v for k, v in values.items() if v is not None}


def prov_document(release: Release) -> ProvDocument:
    from prov.constants import PROV
    from prov.model import ProvDocument

    doc = ProvDocument()
    S = doc.add_namespace("synthreg", SYNTHREG_NS)
    doc.add_namespace("prov", PROV_NS)
    v = _local(c.ref(release))
    at = release.created_at

    version = doc.entity(
        f"synthreg:{v}",
        {
            "prov:type": S["DatasetVersion"],
            "prov:label": c.ref(release),
            **_attrs(
                name=release.name,
                version=release.version,
                manifest_sha256=release.manifest_sha256,
                licence=release.dataset_licence,
                git_commit=release.git_commit,
                images=release.counts.total,
                accepted=release.counts.accepted,
                rejected=release.counts.rejected,
                signature="release.dsse.json",
            ),
        },
    )
    manifest = doc.entity(
        f"synthreg:{v}/manifest",
        {
            "prov:type": S["Manifest"],
            "prov:label": f"filtered manifest of {c.ref(release)}",
            **_attrs(sha256=release.manifest_sha256, path=release.manifest_path),
        },
    )
    candidates = doc.entity(
        f"synthreg:{v}/candidates",
        {"prov:type": S["CandidateManifest"], "prov:label": "generated candidates, before filtering"},
    )
    report = doc.entity(
        f"synthreg:policy-report/{release.policy_report_sha256}",
        {
            "prov:type": S["PolicyReport"],
            **_attrs(sha256=release.policy_report_sha256, passed=release.policy_passed),
        },
    )
    shards = [
        doc.entity(
            f"synthreg:shard/{s.sha256}",
            {"prov:type": S["Shard"], **_attrs(sha256=s.sha256, path=s.path, size=s.size, members=s.members)},
        )
        for s in release.shards
    ]
    sources = {}
    for key, s, roles in c.source_groups(release):
        attrs: list[tuple[str, Any]] = [("prov:type", S["Source"]), ("prov:label", s.name)]
        attrs += list(
            _attrs(
                name=s.name, version=s.version, digest=s.digest, licence=s.licence, url=s.url, status=s.status
            ).items()
        )
        attrs += [("synthreg:role", role) for role in roles]
        entity = doc.entity(f"synthreg:source/{key}", attrs)
        sources[key] = (entity, roles)
    waivers = [
        doc.entity(
            f"synthreg:waiver/{_local(w.rule_id)}/{w.expires.isoformat()}",
            {
                "prov:type": S["Waiver"],
                **_attrs(
                    rule_id=w.rule_id,
                    scope=w.scope,
                    reason=w.reason,
                    approver=w.approver,
                    expires=w.expires.isoformat(),
                ),
            },
        )
        for w in release.waivers
    ]

    generate = doc.activity(f"synthreg:{v}/generate", other_attributes={"prov:label": "synthreg generate"})
    filter_ = doc.activity(f"synthreg:{v}/filter", other_attributes={"prov:label": "synthreg filter"})
    validate = doc.activity(f"synthreg:{v}/validate", other_attributes={"prov:label": "synthreg validate"})
    release_ = doc.activity(f"synthreg:{v}/release", at, other_attributes={"prov:label": "synthreg release"})

    # The actor is whoever ran the release (git user.name or SYNTHREG_ACTOR): a person or a CI bot.
    actor = doc.agent(
        f"synthreg:actor/{_local(release.actor)}",
        {"prov:type": S["ReleaseActor"], "prov:label": release.actor},
    )
    trained_on = [entity for entity, roles in sources.values() if "generator-training" in roles]
    for g in release.generators:
        label = c.generator_label(g)
        agent = doc.agent(
            f"synthreg:generator/{_local(label)}",
            {
                "prov:type": PROV["SoftwareAgent"],
                "prov:label": label,
                **_attrs(
                    name=g.name,
                    backend=g.backend,
                    weights_digest=g.weights_digest,
                    licence=g.licence,
                    pipeline_class=g.pipeline_class,
                    scheduler=g.scheduler,
                ),
            },
        )
        weights = doc.entity(
            f"synthreg:weights/{g.weights_digest}",
            {
                "prov:type": S["GeneratorWeights"],
                "prov:label": f"weights of {g.name}",
                **_attrs(weights_digest=g.weights_digest, licence=g.licence, generator=g.name),
            },
        )
        doc.usage(generate, weights, other_attributes={"prov:role": S["weights"]})
        doc.association(generate, agent)
        doc.attribution(candidates, agent)
        for source in trained_on:
            doc.derivation(weights, source, other_attributes={"prov:type": S["Training"]})

    # Each source is used by the activity its role names (the generator's training data is used
    # through the weights, derived from it above).
    by_role = {"conditioning": generate, "training": generate, "filtering": filter_, "evaluation": validate}
    for entity, roles in sources.values():
        for role in roles:
            if role in by_role:
                doc.usage(by_role[role], entity, other_attributes={"prov:role": S[role]})

    doc.generation(candidates, generate)
    for shard in shards:
        doc.generation(shard, generate)
        doc.usage(release_, shard)
    doc.usage(filter_, candidates)
    doc.generation(manifest, filter_)
    doc.derivation(manifest, candidates, filter_)
    doc.usage(validate, manifest)
    doc.generation(report, validate)
    doc.usage(release_, report)
    doc.usage(release_, manifest)
    for w in waivers:
        doc.usage(release_, w)
    doc.generation(version, release_, at)
    doc.association(release_, actor)
    doc.attribution(version, actor)
    doc.derivation(version, manifest, release_)
    for key, _, _ in c.derived_sources(release):
        doc.derivation(version, sources[key][0])
    d = release.derived_from
    if d:  # synthreg derive: a revision of the parent, which also holds the rows left out
        parent = doc.entity(
            f"synthreg:{_local(d.parent)}",
            {
                "prov:type": S["DatasetVersion"],
                "prov:label": d.parent,
                **_attrs(manifest_sha256=d.parent_manifest_sha256),
            },
        )
        doc.revision(
            version,
            parent,
            other_attributes=_attrs(
                removed=d.removed,
                excluded_samples=len(d.excluded_sample_ids),
                excluded_sources=", ".join(d.excluded_sources) or "none",
                reason=d.reason,
            ),
        )
    return doc


def prov_json(release: Release) -> str:
    """The release's PROV document as PROV-JSON (indented, keys sorted, stable for a given release):
    the text ``ProvDocument.serialize(format="json", indent=2, sort_keys=True)`` writes, made the way it
    makes it (``encode_json_document``, then ``json.dumps`` with ``ProvJSONEncoder``), but with the
    document let go between the two. Its records and its bundle refer to each other, so only a
    collection frees them; the library's ``serialize`` held them while the text was written. Peak of
    Python objects at 10,000 shards: 80 -> 64 MB (issue 22; the document alone is 47 MB)."""
    import gc

    from prov.serializers.provjson import ProvJSONEncoder, encode_json_document

    doc = prov_document(release)
    container = encode_json_document(doc)
    del doc
    gc.collect()
    return json.dumps(container, cls=ProvJSONEncoder, indent=2, sort_keys=True)
