"""What a release record says about how its data was filtered (issue 21: the filter settings, the scoring
models and the checks that did not run are signed with the release) and which files it holds (issue 23:
the flat manifest is listed in Croissant with its digest)."""

from __future__ import annotations

import json

from tests.registry.conftest import Built, folder, sha256


def test_the_signed_record_carries_the_filter_settings_and_the_card_says_them(released: Built):
    record = released.record
    assert record is not None and record.filter is not None
    made = json.loads((released.ws / "data/digits/filtered/filter-info.json").read_text())
    assert record.filter.params == made["params"] and record.filter.domain == made["domain"]
    assert record.filter.domain is not None and record.filter.domain["domain"] == "tiny-digits"
    signed = json.loads((folder(released.ws, "1.0.0") / "release.json").read_text())
    assert signed["filter"]["params"]["identity_threshold"] == made["params"]["identity_threshold"]
    card = (folder(released.ws, "1.0.0") / "README.md").read_text()
    assert f"Filter settings: identity_threshold {made['params']['identity_threshold']}" in card


def test_croissant_lists_the_flat_manifest_with_its_digest(released: Built):
    out = folder(released.ws, "1.0.0")
    flat = sha256(out / "data/manifest-flat.parquet")
    assert released.record is not None and released.record.flat_manifest_sha256 == flat
    doc = json.loads((out / "croissant.json").read_text())
    [entry] = [d for d in doc["distribution"] if d.get("contentUrl") == "data/manifest-flat.parquet"]
    assert entry["sha256"] == flat and entry["encodingFormat"] == "application/x-parquet"


def test_the_html_report_shows_the_filter_settings_and_how_to_check_a_marking(released: Built):
    page = (folder(released.ws, "1.0.0") / "report.html").read_text()
    filter_section = page[page.index('<section id="filter">') :]
    filter_section = filter_section[: filter_section.index("</section>")]
    assert "<code>identity_threshold</code></td><td>0.7" in filter_section
    assert "Scoring domain: <b>tiny-digits</b>" in filter_section
    marking = page[page.index('<section id="marking">') :]
    marking = marking[: marking.index("</section>")]
    assert "trainedAlgorithmicMedia" in marking and "exiftool -XMP-iptcExt:DigitalSourceType" in marking
    assert "No C2PA content credentials: the recipe did not ask for them." in marking


def test_the_release_reads_the_filter_settings_from_both_files(tmp_path):
    """Issue 23 moved the settings out of filter.json (numbers only, for DVC) into filter-info.json; a
    release reads both, so a workspace filtered before the move still releases with its settings, and one
    whose side file is gone is refused rather than released without them."""
    import pytest

    from registry.core.errors import ReleaseError
    from registry.releases.release import _filter_settings

    counts = {"total": 2, "accepted": 1, "rejected": 1, "accepted_share": 0.5, "reasons": {"ok": 1}}
    info = {"params": {"identity_threshold": 0.7}, "domain": None, "not_checked": ["no domain"]}
    assert _filter_settings(tmp_path) is None  # filtered before filter.json existed
    (tmp_path / "filter.json").write_text(json.dumps(counts | info))  # before issue 23: one file
    assert _filter_settings(tmp_path).model_dump() == info
    (tmp_path / "filter.json").write_text(json.dumps(counts))
    with pytest.raises(ReleaseError, match=r"filter-info\.json is missing or is not the filter's summary"):
        _filter_settings(tmp_path)
    (tmp_path / "filter-info.json").write_text(json.dumps(info))
    assert _filter_settings(tmp_path).model_dump() == info
    (tmp_path / "filter-info.json").write_text("[1]")
    with pytest.raises(ReleaseError, match=r"filter-info\.json is not the filter's summary"):
        _filter_settings(tmp_path)
