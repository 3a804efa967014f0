"""Deriving a version without some samples, or without a source's samples, from a released one: in a real
temporary git + DVC workspace (fixtures in tests/registry/conftest.py), signed, verified, traced; and every
refusal leaves the workspace exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import ReleaseError
from registry.exports.prov import prov_document
from registry.lineage.impact import impact
from registry.records.policy import PolicyReport
from registry.releases.derive import Criteria, derive
from registry.releases.loader import open_release
from registry.releases.verify import verify
from registry.store import audit
from registry.store import manifest as mf
from registry.store.releases import load_release
from tests.registry.conftest import (
    CONDITIONING,
    WAIVED,
    Built,
    folder,
    sh,
    sha256,
    strays,
    table_rows,
    tags,
    tree_digests,
)

runner = CliRunner()
REASON = "subject asked for removal (ticket 42)"


def parent_rows(ws: Path) -> list[dict]:
    table = mf.read_table(folder(ws, "1.0.0") / "data" / "manifest.parquet")
    return table.select(["sample_id", "identity", "shard", "member", "decision"]).to_pylist()


def snapshot(ws: Path) -> tuple:
    """Everything a refused derive must leave as it was."""
    return (
        tree_digests(ws / "releases"),
        sh(ws, "git", "rev-parse", "HEAD"),
        tags(ws),
        tree_digests(ws / audit.LOG),
        sh(ws, "git", "status", "--porcelain", "--untracked-files=all"),
    )


def test_derive_without_samples_shares_untouched_shards(released_copy: Path, released: Built):
    ws, parent = released_copy, released.record
    assert parent is not None
    rows = parent_rows(ws)
    first_shard = rows[0]["shard"]
    gone = [r["sample_id"] for r in rows if r["shard"] == first_shard][:2]

    record = derive(ws, "digits@1.0.0", "1.0.1", REASON, exclude_samples=gone, key=released.key)

    d = record.derived_from
    assert d is not None
    assert (d.parent, d.parent_manifest_sha256) == ("digits@1.0.0", parent.manifest_sha256)
    assert (d.excluded_sample_ids, d.excluded_sources, d.removed, d.reason) == (sorted(gone), [], 2, REASON)
    assert d.removed_accepted == sum(r["decision"] == "accepted" for r in rows if r["sample_id"] in gone)
    assert record.counts.total == 10 and record.recipe == parent.recipe
    assert record.sources == parent.sources

    out = folder(ws, "1.0.1")
    kept = mf.read_table(out / "data" / "manifest.parquet").to_pylist()
    assert [r["sample_id"] for r in kept] == [r["sample_id"] for r in rows if r["sample_id"] not in gone]
    # the shard that lost two members is rewritten without them; the other is the parent's, byte for byte
    by_source = {s.source: s for s in record.shards}
    parent_by_source = {s.source: s for s in parent.shards}
    assert by_source.keys() == parent_by_source.keys()
    for shard, ref in by_source.items():
        if shard == first_shard:
            assert ref.sha256 != parent_by_source[shard].sha256 and ref.members == 4
        else:
            assert ref == parent_by_source[shard]
        assert sha256(out / "data" / ref.path) == ref.sha256

    result = verify(ws, "digits@1.0.1")
    assert (result.ok, result.problems, result.samples, result.shards) == (True, [], 10, 2)
    assert verify(ws, "digits@1.0.0").ok  # the parent is untouched
    reader = open_release(ws, "digits@1.0.1", accepted_only=False)
    assert len(reader) == 10 and not set(gone) & set(reader.table["sample_id"].to_pylist())

    report = PolicyReport.model_validate_json((out / "policy-report.json").read_text())
    assert report.manifest == "releases/digits/1.0.1/data/manifest.parquet"
    assert report.manifest_sha256 == record.manifest_sha256 and report.passed
    assert record.policy_report_sha256 == sha256(out / "policy-report.json")
    card = (out / "card.md").read_text()
    assert "derived from `digits@1.0.0` by leaving out 2 sample(s) by id: 2 image(s)" in card
    assert REASON in card
    prov = json.loads((out / "prov.json").read_text())
    [revision] = [
        r for r in prov["wasDerivedFrom"].values() if r.get("prov:type", {}).get("$") == "prov:Revision"
    ]
    assert prov["entity"][revision["prov:usedEntity"]]["prov:label"] == "digits@1.0.0"
    assert revision["synthreg:removed"]["$"] == "2" and revision["synthreg:reason"] == REASON
    from prov.model import ProvDocument

    text = (out / "prov.json").read_text()
    assert ProvDocument.deserialize(content=text, format="json") == prov_document(record)

    assert tags(ws) == ["digits@v1.0.0", "digits@v1.0.1"]
    assert sh(ws, "git", "log", "-1", "--format=%s") == f"Derive digits@1.0.1 from digits@1.0.0: {REASON}"
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""
    event = audit.read(ws)[-1]
    assert (event.kind, event.subject) == ("derive", "digits@1.0.1")
    assert event.details["derived_from"] == d.model_dump(mode="json")
    assert audit.verify(ws) == []

    # impact of an excluded sample reaches the parent only; of a kept one, both versions
    assert [v.release for v in impact(ws, sample=gone[0]).versions] == ["digits@1.0.0"]
    assert [v.release for v in impact(ws, sample=kept[0]["sample_id"]).versions] == [
        "digits@1.0.0",
        "digits@1.0.1",
    ]


def test_derive_without_a_source_drops_its_identities_samples(released_copy: Path, released: Built):
    ws = released_copy
    rows = parent_rows(ws)
    sevens = [r for r in rows if r["identity"] in CONDITIONING["identities"]]
    assert 0 < len(sevens) < len(rows)

    # before: the source reaches only the sevens of 1.0.0
    [hit] = impact(ws, source="volunteer-sevens").versions
    assert (hit.release, hit.samples) == ("digits@1.0.0", len(sevens))

    record = derive(
        ws, "digits@1.0.0", "1.1.0", "licence revoked", exclude_sources=["volunteer-sevens"], key=released.key
    )
    d = record.derived_from
    assert d is not None and (d.excluded_sources, d.excluded_sample_ids, d.removed) == (
        ["volunteer-sevens"],
        [],
        len(sevens),
    )
    assert "7" not in record.counts.per_identity and record.counts.total == len(rows) - len(sevens)
    assert "volunteer-sevens" not in {s.name for s in record.sources}
    assert record.recipe is not None and "volunteer-sevens" not in {s.name for s in record.recipe.sources}
    assert verify(ws, "digits@1.1.0").ok
    # after: the new version does not depend on it
    assert [v.release for v in impact(ws, source="volunteer-sevens").versions] == ["digits@1.0.0"]
    assert [v.release for v in impact(ws, source="sklearn-digits").versions] == [
        "digits@1.0.0",
        "digits@1.1.0",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"exclude_samples": ["digits-9-000000-deadbeef"]},
            "1 sample(s) to exclude are not in digits@1.0.0, first 'digits-9-000000-deadbeef'",
        ),
        ({"exclude_sources": ["no-such-source"]}, "digits@1.0.0 has no source 'no-such-source'"),
        (
            {"exclude_sources": ["sklearn-digits"]},
            "source 'sklearn-digits' trained generator tiny-digits, which made every image of digits@1.0.0",
        ),
        (
            {"exclude_sources": ["sklearn-digits-held-out"]},
            "source 'sklearn-digits-held-out' (evaluation) made no image of digits@1.0.0",
        ),
        ({}, "nothing to exclude"),
        ({"exclude_samples": ["x"], "reason": "  "}, "say why the samples are excluded"),
        ({"version": "1.0.0", "exclude_sources": ["volunteer-sevens"]}, "digits@1.0.0 exists already"),
        ({"version": "0.9.0", "exclude_sources": ["volunteer-sevens"]}, "version 0.9.0 is not greater"),
        ({"ref": "digits@3.0.0", "exclude_sources": ["volunteer-sevens"]}, "digits@3.0.0 is not released"),
        ({"exclude_samples": "ALL"}, "leaves no accepted sample of digits@1.0.0"),
    ],
    ids=[
        "unknown-sample",
        "unknown-source",
        "generator-training-source",
        "evaluation-source",
        "nothing",
        "no-reason",
        "existing-version",
        "lower-version",
        "unknown-parent",
        "everything",
    ],
)
def test_refusals_name_the_problem_and_write_nothing(
    released_copy: Path, released: Built, kwargs: dict, message: str
):
    ws = released_copy
    if kwargs.get("exclude_samples") == "ALL":
        kwargs = {"exclude_samples": [r["sample_id"] for r in parent_rows(ws)]}
    args = {"ref": "digits@1.0.0", "version": "1.1.0", "reason": REASON} | kwargs
    before = snapshot(ws)
    with pytest.raises(ReleaseError) as e:
        derive(ws, args.pop("ref"), args.pop("version"), args.pop("reason"), key=released.key, **args)
    assert message in str(e.value)
    assert snapshot(ws) == before and strays(ws) == []


def test_a_derived_version_is_checked_by_the_policy_packs_again(released_copy: Path, released: Built):
    ws = released_copy
    sh(ws, "git", "rm", "-q", "-r", "waivers")  # the toy set fails three error rules unwaived
    sh(ws, "git", "commit", "-q", "-m", "No waivers")
    before = snapshot(ws)
    [gone] = [r["sample_id"] for r in parent_rows(ws)][:1]
    with pytest.raises(ReleaseError) as e:
        derive(ws, "digits@1.0.0", "1.1.0", REASON, exclude_samples=[gone], key=released.key)
    assert str(e.value).startswith(
        "digits@1.1.0 would fail error rules without a waiver: quality.identity-consistency"
    )
    assert str(e.value).endswith("Exclude less, or waive the rule (`synthreg waive`), then derive again")
    assert snapshot(ws) == before and strays(ws) == []


def test_an_edited_parent_record_is_refused(released_copy: Path, released: Built):
    ws = released_copy
    record = folder(ws, "1.0.0") / "release.json"
    data = json.loads(record.read_text())
    data["recipe"]["generator"]["training_sources"] = []  # hide what trained the generator
    record.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    before = snapshot(ws)
    with pytest.raises(ReleaseError) as e:
        derive(ws, "digits@1.0.0", "1.1.0", REASON, exclude_sources=["volunteer-sevens"], key=released.key)
    assert str(e.value) == (
        "digits@1.0.0 does not verify (release.json differs from the signed record (edited after signing)); "
        "run `synthreg verify digits@1.0.0`"
    )
    assert snapshot(ws) == before and strays(ws) == []


def test_a_derived_version_can_be_derived_from_and_shares_shards(released_copy: Path, released: Built):
    ws = released_copy
    rows = parent_rows(ws)
    sevens = [r["sample_id"] for r in rows if r["identity"] == "7"]
    one = next(r["sample_id"] for r in rows if r["identity"] == "1")
    first = derive(ws, "digits@1.0.0", "1.0.1", REASON, exclude_samples=sevens, key=released.key)
    # every seven is gone already: excluding their source now would remove nothing
    with pytest.raises(ReleaseError, match=r"^digits@1\.0\.1 holds no sample of identities \['7'\]"):
        derive(ws, "digits@1.0.1", "1.0.2", REASON, exclude_sources=["VOLUNTEER-sevens"], key=released.key)
    second = derive(ws, "digits@1.0.1", "1.0.2", REASON, exclude_samples=[one], key=released.key)
    assert second.derived_from is not None and second.derived_from.parent == "digits@1.0.1"
    assert second.counts.total == first.counts.total - 1 == len(rows) - len(sevens) - 1
    shared = {s.sha256 for s in first.shards} & {s.sha256 for s in second.shards}
    assert shared  # the shard that lost nothing this time is the same file
    assert verify(ws, "digits@1.0.2").ok and verify(ws, "digits@1.0.1").ok
    # the waivers the re-check applied, its verdict, then the derivation
    waived = [w.rule_id for w in second.waivers]
    assert waived == WAIVED
    tail = audit.read(ws)[-(len(waived) + 2) :]
    assert [(e.kind, e.subject) for e in tail] == [("waiver", f"digits:{r}") for r in waived] + [
        ("validate", "digits@1.0.2"),
        ("derive", "digits@1.0.2"),
    ]
    assert tail[-2].details["report_sha256"] == second.policy_report_sha256
    assert audit.verify(ws) == []


def test_a_corrupt_parent_image_is_never_signed_into_the_new_version(released_copy: Path, released: Built):
    ws, parent = released_copy, released.record
    assert parent is not None
    rows = parent_rows(ws)
    gone, victim = rows[0]["sample_id"], rows[1]
    shard = folder(ws, "1.0.0") / "data" / next(s.path for s in parent.shards if s.source == victim["shard"])
    data = bytearray(shard.read_bytes())
    at = data.index(b"IDAT", data.index(victim["member"].encode()))  # the kept image's pixel data
    data[at + 8] ^= 0xFF
    shard.chmod(0o644)
    shard.write_bytes(bytes(data))
    before = snapshot(ws)
    with pytest.raises(ReleaseError) as e:
        derive(ws, "digits@1.0.0", "1.1.0", REASON, exclude_samples=[gone], key=released.key)
    assert str(e.value).startswith(f"digits@1.0.0 does not verify (sample {victim['sample_id']}: corrupted")
    assert snapshot(ws) == before and strays(ws) == []


def test_cli_derive_from_a_file_of_ids_then_show_and_trace_text(released_copy: Path, released: Built):
    ws = released_copy
    rows = parent_rows(ws)
    ids = ws / "excluded.txt"
    ids.write_text("\n".join(r["sample_id"] for r in rows[-3:]) + "\n\n")
    common = ["--reason", REASON, "--key", str(released.key), "-w", str(ws)]
    result = runner.invoke(
        app,
        ["derive", "digits@1.0.0", "--version", "1.0.1", "--exclude-samples", str(ids), *common],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("derived digits@1.0.1 from digits@1.0.0: 3 sample(s) left out")
    record = load_release(ws, "digits@1.0.1")
    assert record.derived_from is not None and len(record.derived_from.excluded_sample_ids) == 3
    shown = runner.invoke(app, ["show", "digits@1.0.1", "-w", str(ws)])
    assert ["derived from", f"digits@1.0.0 without 3 sample(s): {REASON}"] in table_rows(shown.stdout)

    missing = runner.invoke(
        app,
        ["derive", "digits@1.0.1", "--version", "1.0.2", "--exclude-samples", "nope.txt", *common],
    )
    assert missing.exit_code == 1
    assert "sample id file nope.txt does not exist" in missing.output
    assert json.loads((folder(ws, "1.0.1") / "release.json").read_text())["derived_from"]["removed"] == 3


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        ([{"role": "training"}], "source 'x' is training data behind digits@1.0.0; nothing would be left"),
        ([{"role": "conditioning"}], "source 'x' conditioned every identity of digits@1.0.0; nothing would"),
        (
            [{"role": "conditioning", "identities": ["7"]}, {"role": "filtering"}],
            "source 'x' conditioned identities ['7'] of digits@1.0.0 but is also used for filtering by every",
        ),
        ([{"role": "filtering"}, {"role": "evaluation"}], "source 'x' (evaluation, filtering) made no image"),
    ],
    ids=["training", "conditioning-all", "conditioning-and-filtering", "filtering-and-evaluation"],
)
def test_which_sources_can_be_excluded(sources: list[dict], message: str):
    from registry.records.dataset import Recipe
    from registry.releases.derive import excluded_identities
    from tests.conftest import small_recipe

    recipe = Recipe.model_validate(
        small_recipe(sources=[{"name": "x", "licence": "MIT"} | s for s in sources])
    )
    with pytest.raises(ReleaseError) as e:
        excluded_identities(recipe, "X", "digits@1.0.0")
    assert str(e.value).startswith(message)
    ones_and_sevens = {"name": "x", "licence": "MIT", "role": "conditioning", "identities": ["1", "7"]}
    ok = Recipe.model_validate(small_recipe(sources=[ones_and_sevens]))
    assert excluded_identities(ok, "x", "digits@1.0.0") == {"1", "7"}


def test_derive_leaves_out_by_prompt_generator_and_identity(released_copy: Path, released: Built):
    """Issue 19: leaving data out by what made it. --exclude-identity, --exclude-prompt (a regex) and
    --exclude-generator (a name or a weights digest prefix) each select the parent's samples they name;
    the record keeps the criteria, the card says them, and bad criteria are refused before anything is
    written."""
    ws = released_copy
    table = mf.read_table(folder(ws, "1.0.0") / "data" / "manifest.parquet")
    rows = table.select(["sample_id", "identity", "prompt", "weights_digest"]).to_pylist()
    identity = rows[0]["identity"]
    thin = [r["sample_id"] for r in rows if "thin" in r["prompt"] and r["identity"] != identity]
    assert thin and any(r["identity"] == identity for r in rows)

    before = snapshot(ws)
    for kw, message in [
        ({"exclude_identity": ("nine",)}, r"--exclude-identity 'nine' is not an identity of digits@1\.0\.0"),
        ({"exclude_prompt": ("(",)}, r"--exclude-prompt '\(' is not a valid regular expression"),
        (
            {"exclude_generator": ("sd-huge",)},
            r"--exclude-generator 'sd-huge' made no sample of digits@1\.0\.0",
        ),
        ({"exclude_prompt": ("a purple elephant",)}, r"no prompt of the parent matches --exclude-prompt"),
    ]:
        criteria = Criteria(
            kw.get("exclude_prompt", ()), kw.get("exclude_generator", ()), kw.get("exclude_identity", ())
        )
        with pytest.raises(ReleaseError, match=message):
            derive(ws, "digits@1.0.0", "1.0.1", REASON, key=released.key, criteria=criteria)
        assert snapshot(ws) == before

    criteria = Criteria(prompts=("thin",), identities=(identity,))
    record = derive(ws, "digits@1.0.0", "1.0.1", REASON, key=released.key, criteria=criteria)
    d = record.derived_from
    assert d is not None
    assert (d.excluded_prompts, d.excluded_identities, d.excluded_sample_ids) == (["thin"], [identity], [])
    kept = {r["sample_id"] for r in mf.read_table(folder(ws, "1.0.1") / "data/manifest.parquet").to_pylist()}
    gone = set(thin) | {r["sample_id"] for r in rows if r["identity"] == identity}
    assert kept == {r["sample_id"] for r in rows} - gone and d.removed == len(gone)
    assert identity not in record.counts.per_identity
    card = (folder(ws, "1.0.1") / "card.md").read_text()
    assert (
        "every sample whose prompt matches `thin`" in card
        and f"every sample of identity `{identity}`" in card
    )
    assert verify(ws, "digits@1.0.1").ok

    weights = rows[0]["weights_digest"]
    cli = runner.invoke(
        app,
        ["derive", "digits@1.0.0", "--version", "1.0.2", "--reason", REASON,
         "--exclude-generator", weights[:12], "-w", str(ws)],
    )  # fmt: skip
    assert cli.exit_code == 1 and "leaves no accepted sample of digits@1.0.0" in cli.stderr, cli.output


def test_no_record_is_held_while_dvc_adds_and_pushes_the_version(
    released_copy: Path, released: Built, monkeypatch: pytest.MonkeyPatch
):
    """DVC's own process adds and pushes the version beside derive's (and release's), so neither the
    parent's record nor the new one is held then (issue 22: 18 MB each at 10,000 shards), and the heap
    they freed is given back before `dvc add` starts."""
    import gc
    from collections import Counter

    from registry.core import allocator, vcs
    from registry.records.release import Release

    def records() -> Counter[str]:
        gc.collect()
        return Counter(f"{o.name}@{o.version}" for o in gc.get_objects() if isinstance(o, Release))

    already = records()  # the `released` fixture's own
    events: list[tuple[str, list[str]]] = []
    run_dvc, give_back = vcs.run_dvc, allocator.give_back
    monkeypatch.setattr(allocator, "give_back", lambda: events.append(("give back", [])) or give_back())

    def spied(ws: Path, *args: str, **kw: object):
        if args[0] in ("add", "push"):
            events.append((args[0], sorted((records() - already).elements())))
        return run_dvc(ws, *args, **kw)

    monkeypatch.setattr(vcs, "run_dvc", spied)
    [gone] = [r["sample_id"] for r in parent_rows(released_copy)][:1]
    record = derive(released_copy, "digits@1.0.0", "1.0.1", REASON, exclude_samples=[gone], key=released.key)
    assert record.version == "1.0.1" and record.remote  # pushed, and read back whole
    assert events[-3:] == [("give back", []), ("add", []), ("push", [])], events
