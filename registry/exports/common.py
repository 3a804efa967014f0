"""What the card, Croissant and PROV exports say alike: licences, uses, citation, labels.

Everything here is a pure function of a ``Release`` (and its ``PolicyReport``), so the three
exports cannot drift apart on what the dataset is for, what it may not be used for, or how to cite it.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, TypeVar, get_args

from pydantic import BaseModel

from registry.records.dataset import SourceRef, UseCategory
from registry.records.policy import PolicyReport, RuleResult
from registry.records.release import GeneratorUse, Release

# Licence ids that are SPDX identifiers (https://spdx.org/licenses/). The licence knowledge base
# uses the SPDX id where one exists; ids outside this list are treated as non-SPDX names.
SPDX_IDS = frozenset(
    {
        "Apache-2.0",
        "BSD-2-Clause",
        "BSD-3-Clause",
        "CC-BY-3.0",
        "CC-BY-4.0",
        "CC-BY-NC-4.0",
        "CC-BY-NC-ND-4.0",
        "CC-BY-NC-SA-4.0",
        "CC-BY-ND-4.0",
        "CC-BY-SA-3.0",
        "CC-BY-SA-4.0",
        "CC0-1.0",
        "CDLA-Permissive-1.0",
        "CDLA-Permissive-2.0",
        "CDLA-Sharing-1.0",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "LGPL-3.0-only",
        "MIT",
        "MPL-2.0",
        "ODbL-1.0",
        "ODC-By-1.0",
        "PDDL-1.0",
        "Unlicense",
    }
)

# What each filter reason code means (generators/filter.py chooses the first failing check).
REASONS = {
    "ok": "passed every check; accepted",
    "low_contrast": "pixel standard deviation below the contrast threshold: blank or washed out",
    "identity_mismatch": "an identity classifier trained on real data predicts another identity",
    "low_confidence": "the classifier predicts the intended identity, below the confidence threshold",
    "memorised_copy": "too close (RMS pixel distance, or embedding cosine similarity) to a real image: a "
    "memorised copy",
    "low_clip_score": "its CLIP score (image-prompt embedding similarity) is below min_clip_score",
    "near_duplicate": "perceptual hash within the duplicate distance of an earlier accepted image",
    "near_duplicate_embedding": "embedding within the duplicate similarity of an earlier accepted image",
    "unfiltered": "no filter decision recorded",
}

# What a manifest column holds, where ``SampleRecord`` gives no description of its own.
COLUMN_NOTES = {
    "dataset": "dataset name",
    "sample_id": "stable id of the sample, derived from the recipe",
    "index": "position in the generation plan",
    "identity": "the identity asked for in the prompt (the class label)",
    "attributes": "the attribute values asked for in the prompt",
    "prompt": "the prompt the image was generated from",
    "negative_prompt": "the negative prompt",
    "seed": "the image's own seed: with the weights and the prompt it regenerates the image",
    "steps": "denoising steps",
    "guidance": "classifier-free guidance scale",
    "width": "image width in pixels",
    "height": "image height in pixels",
    "generator_name": "generator name",
    "generator_backend": "generator backend",
    "weights_digest": "sha256 over the generator's weight files",
    "generator_licence": "licence id of the generator weights",
    "pipeline_class": "pipeline class that ran",
    "scheduler": "noise scheduler class",
    "scheduler_config_digest": "sha256 of the scheduler configuration",
    "image_sha256": "sha256 of the PNG image",
    "phash": "perceptual hash (64 bits, hex)",
    "batch_size": "images per generation batch",
    "library_versions": "versions of the libraries that generated the image",
    "device": "device the image was generated on",
    "identity_pred": "identity predicted by a classifier trained on real data",
    "identity_confidence": "the classifier's confidence in the intended identity",
    "contrast": "pixel standard deviation / 255",
    "duplicate_of": "the earlier accepted sample this one nearly duplicates",
    "observed_attributes": "attribute values measured on the image",
    "decision": "the filter's decision: accepted or rejected",
    "reason": "why: the first failing filter check (code: detail), or ok",
}


def column_description(name: str) -> str:
    from registry.records.dataset import SampleRecord

    info = SampleRecord.model_fields.get(name)
    return (info.description if info and info.description else None) or COLUMN_NOTES.get(name, "")


# Manifest columns the Croissant record set exposes, in order.
RECORD_FIELDS = (
    "sample_id",
    "identity",
    "prompt",
    "seed",
    "weights_digest",
    "decision",
    "reason",
    "image_sha256",
)

# Source roles whose data the synthetic images are made from (conditioning, filtering, training,
# the generator's own training). An evaluation source is only compared against (leakage check):
# the dataset is not derived from it.
DERIVED_ROLES = frozenset({"conditioning", "filtering", "training", "generator-training"})


def spdx_url(licence: str) -> str | None:
    return f"https://spdx.org/licenses/{licence}.html" if licence in SPDX_IDS else None


def ref(release: Release) -> str:
    return f"{release.name}@{release.version}"


def generator_label(g: GeneratorUse) -> str:
    return f"{g.name}@{g.weights_digest[:12]}"


def slug(text: str) -> str:
    """An id-safe form of a name: letters, digits, '.', '_' and '-'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def source_groups(release: Release) -> list[tuple[str, SourceRef, list[str]]]:
    """(id, source, roles) per distinct source. A recipe may list the same data twice in two roles
    (the generator's training split is often the filters' reference set too): one entity, two roles."""
    groups: dict[tuple, tuple[SourceRef, list[str]]] = {}
    for s in release.sources:
        key = (s.name, s.version, s.digest, s.licence, s.url, s.status)
        groups.setdefault(key, (s, []))[1].append(s.role)
    out, seen = [], Counter[str]()
    for s, roles in groups.values():
        base = slug(s.name)
        seen[base] += 1
        out.append((base if seen[base] == 1 else f"{base}-{seen[base]}", s, roles))
    return out


def derived_sources(release: Release) -> list[tuple[str, SourceRef, list[str]]]:
    """The source groups the dataset is made from (any role but evaluation only)."""
    return [g for g in source_groups(release) if DERIVED_ROLES.intersection(g[2])]


def training_sources(release: Release) -> list[SourceRef]:
    return [s for s in release.sources if s.role == "generator-training"]


def describe_source(s: SourceRef, roles: list[str] | None = None) -> str:
    bits = [s.name]
    if s.version:
        bits.append(f"({s.version})")
    bits.append(f"[{', '.join(roles or [s.role])}; licence {s.licence}; {s.status}]")
    if s.url:
        bits.append(s.url)
    return " ".join(bits)


def check_report(release: Release, report: PolicyReport) -> None:
    """The report must be the one the release was gated on: same manifest."""
    if report.manifest_sha256 != release.manifest_sha256:
        raise ValueError(
            f"policy report is for manifest {report.manifest_sha256[:12]}, but {ref(release)} released "
            f"manifest {release.manifest_sha256[:12]}; pass the report the release was gated on"
        )


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def result_line(r: RuleResult) -> str:
    line = f"{r.rule_id} [{r.severity}, {r.status}]: {r.message}"
    if r.measured is not None or r.threshold is not None:
        line += f" (measured {fmt(r.measured)}, threshold {fmt(r.threshold)})"
    if r.waiver is not None:
        line += f"; waived by {r.waiver.approver} until {r.waiver.expires}: {r.waiver.reason}"
    return line


def representation_results(report: PolicyReport) -> list[RuleResult]:
    return [r for r in report.results if r.kind == "representation"]


def undeclared_uses(release: Release) -> list[str]:
    declared = set(release.intended_use.purposes)
    return [u for u in get_args(UseCategory) if u not in declared and u != "commercial"]


def licence_restrictions(report: PolicyReport) -> list[str]:
    """Restrictions found in the policy results' evidence: licence conflicts (failing or waived),
    withdrawn sources and share-alike duties. Empty when the evidence holds none."""
    out: list[str] = []
    for r in report.results:
        details = r.evidence.details
        for c in details.get("conflicts", []):
            out.append(
                f"{c.get('subject')} is licensed {c.get('licence')}, which does not allow "
                f"{c.get('use')} ({c.get('citation')}); rule {r.rule_id} {r.status}"
            )
        for w in details.get("withdrawn", []):
            out.append(f"source {w.get('source')} is withdrawn ({w.get('why')}); rule {r.rule_id} {r.status}")
        for d in details.get("duties", []):
            if d.get("share_alike"):
                out.append(
                    f"share-alike: {d.get('subject')} is licensed {d.get('licence')}; adaptations must be "
                    "shared under the same licence"
                )
    return out


def out_of_scope(release: Release, report: PolicyReport) -> list[str]:
    """Uses the release does not cover, derived from its intended use and the licence evidence."""
    out = []
    if not release.intended_use.commercial:
        out.append(
            "Commercial use: the intended use is declared non-commercial, so the licences were not "
            "checked for commercial use."
        )
    undeclared = undeclared_uses(release)
    if undeclared:
        out.append(
            "Uses not declared in the intended use, so not checked against the generator and source "
            f"licences: {', '.join(undeclared)}. Declare the use and validate again before such a use."
        )
    out += [f"Licence restriction: {line}." for line in licence_restrictions(report)]
    return out


def _bibtex_escape(text: str) -> str:
    return re.sub(r"([{}\\])", r"\\\1", text)


def bibtex(release: Release) -> str:
    key = re.sub(r"[^A-Za-z0-9_]", "_", f"{release.name}_{release.version}")
    fields = {
        "title": f"{ref(release)}: a synthetic image dataset",
        "author": release.actor,
        "year": str(release.created_at.year),
        "version": release.version,
        "howpublished": f"synthreg release {ref(release)} (git {release.git_commit})",
        "note": f"manifest sha256 {release.manifest_sha256}",
    }
    body = ",\n".join(f"  {k} = {{{_bibtex_escape(v)}}}" for k, v in fields.items())
    return f"@misc{{{key},\n{body}\n}}"


# A `<` that opens an HTML tag, comment or declaration in Markdown (`<img`, `</`, `<!--`, `<?`); a `<`
# before anything else (`<= 0.01`) is plain text there and is left as it is.
_TAG = re.compile(r"<(?=[A-Za-z/!?])")
M = TypeVar("M", bound=BaseModel)


def md_text(text: str) -> str:
    """Text from a record, safe in Markdown: a ``<`` that would open HTML becomes ``&lt;`` (issue 24: a
    generator name ``<img src=x onerror=...>`` went raw into card.md and README.md)."""
    return _TAG.sub("&lt;", text)


def _md(value: Any) -> Any:
    if isinstance(value, str):
        return md_text(value)
    if isinstance(value, dict):
        return {md_text(k) if isinstance(k, str) else k: _md(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_md(v) for v in value]
    return value


def markdown_safe(model: M) -> M:
    """A copy of ``model`` with every string passed through :func:`md_text`: what the Markdown exports
    render, so no value from data can bring markup into them, wherever it is printed."""
    return type(model).model_validate(_md(model.model_dump(mode="python")))
