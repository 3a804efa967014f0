"""The filter stage on a real (small) tiny-digits run: one decision and reason per row, planted faults.

A module fixture generates 3 digits x 4 images once; every test filters its own copy of that
workspace. Faults are planted one at a time by rewriting one image in the shard tar together with its
``image_sha256`` and ``phash`` in the candidates manifest, so the manifest stays self-consistent and
only the planted check can fire.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import yaml

from generators.filter import filter_manifest
from generators.generate import generate
from generators.scoring import builtin_domain
from generators.shard import encode_png
from generators.tiny_digits import data
from registry.core.digests import perceptual_hash, sha256_bytes, sha256_file
from registry.core.errors import ManifestError
from registry.records.dataset import FilterParams, GenerateParams
from registry.store import manifest as mf
from registry.store.shards import read_members

REPO = Path(__file__).resolve().parents[2]
IDENTITIES = ["3", "5", "7"]
PER_IDENTITY = 4
CANDIDATES = "data/digits/candidates"
FILTERED = "data/digits/filtered"
DECISION_COLUMNS = ("sample_id", "identity", "decision", "reason", "duplicate_of")


# --- helpers -------------------------------------------------------------------------------------


def rows(manifest: Path) -> list[dict]:
    """Every row of a manifest (the columns the filter fills, plus ids), in plan order, via DuckDB."""
    con = mf.connect(manifest)
    cur = con.execute(
        "SELECT sample_id, identity, image_sha256, phash, shard, member, identity_pred, identity_confidence, "
        'contrast, nn_distance, duplicate_of, decision, reason FROM manifest ORDER BY "index"'
    )
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def decisions(manifest: Path) -> dict[str, tuple]:
    return {r["sample_id"]: tuple(r[c] for c in DECISION_COLUMNS) for r in rows(manifest)}


def sample_ids(clean: dict[str, tuple], identity: str, decision: str | None = None) -> list[str]:
    """Sample ids of one identity in plan order (dict order is plan order), optionally by decision."""
    return [s for s, d in clean.items() if d[1] == identity and (decision is None or d[2] == decision)]


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """Rewrite a shard with fixed member metadata (as generate writes them), atomically."""
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(payload))
    os.replace(tmp, path)


def set_cells(manifest: Path, sample_id: str, **values: str) -> None:
    """Set string columns of one row, keeping the manifest schema."""
    table = mf.read_table(manifest)
    i = table["sample_id"].to_pylist().index(sample_id)
    for name, value in values.items():
        col = table[name].to_pylist()
        col[i] = value
        field = mf.SCHEMA.field(name)
        table = table.set_column(table.schema.get_field_index(name), field, pa.array(col, field.type))
    mf.write_table(table, manifest)


def location(ws: Path, sample_id: str) -> tuple[Path, str]:
    (row,) = [r for r in rows(ws / CANDIDATES / "manifest.parquet") if r["sample_id"] == sample_id]
    return ws / row["shard"], row["member"]


def image_of(ws: Path, sample_id: str) -> bytes:
    shard, member = location(ws, sample_id)
    return read_members(shard)[member]


def plant(ws: Path, sample_id: str, image: np.ndarray | bytes) -> None:
    """Replace one sample's image (pixels, or another image's pixels) in its shard, marked as this sample's
    (as generate marks it: a copied marking is a forgery the filter rejects), and its sha256 + phash in the
    candidates manifest."""
    from PIL import Image

    from registry.store.marking import Marking

    [(generator, weights)] = duckdb.sql(
        f"SELECT generator_name, weights_digest FROM '{ws / CANDIDATES / 'manifest.parquet'}' "
        f"WHERE sample_id = '{sample_id}'"
    ).fetchall()
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("L")) if isinstance(image, bytes) else image
    png = encode_png(pixels, Marking(sample_id, generator, weights))
    shard, member = location(ws, sample_id)
    members = read_members(shard)  # insertion order = tar order
    assert member in members
    members[member] = png
    write_tar(shard, list(members.items()))
    set_cells(
        ws / CANDIDATES / "manifest.parquet",
        sample_id,
        image_sha256=sha256_bytes(png),
        phash=perceptual_hash(png),
    )


def run_filter(ws: Path, params: FilterParams | None = None) -> Path:
    res = filter_manifest(CANDIDATES, ws, FILTERED, params)
    assert res.manifest == ws / FILTERED / "manifest.parquet"
    return res.manifest


def assert_only_changed(clean: dict[str, tuple], after: dict[str, tuple], changed: set[str]) -> None:
    assert after.keys() == clean.keys()
    for sid in clean.keys() - changed:
        assert after[sid] == clean[sid], sid


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A workspace with a small tiny-digits run in data/digits/candidates (generated once)."""
    ws = tmp_path_factory.mktemp("filter-gen").resolve()
    shutil.copytree(REPO / "generators" / "tiny_digits" / "model", ws / "model")
    recipe = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())
    recipe["generator"]["path"] = "model"
    recipe.update(identities=IDENTITIES, images_per_identity=PER_IDENTITY, steps=8)
    (ws / "recipes").mkdir()
    (ws / "recipes" / "digits.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    import torch

    threads = torch.get_num_threads()
    try:  # one thread: several times faster than two on a busy 2-core machine, and the same images
        res = generate(Path("recipes/digits.yaml"), ws, params=GenerateParams(batch_size=16, threads=1))
    finally:
        torch.set_num_threads(threads)
    assert res.images == len(IDENTITIES) * PER_IDENTITY and res.shards == 1
    return ws


@pytest.fixture
def ws(generated, tmp_path) -> Path:
    """This test's own copy of the generated workspace (the model is not needed to filter)."""
    dst = (tmp_path / "ws").resolve()
    shutil.copytree(generated, dst, ignore=shutil.ignore_patterns("model"))
    return dst


@pytest.fixture(scope="module")
def clean(generated, tmp_path_factory) -> dict[str, tuple]:
    """Decisions of an untouched run with default params, by sample id."""
    ws = tmp_path_factory.mktemp("filter-clean").resolve()
    shutil.copytree(generated / "data", ws / "data")
    return decisions(run_filter(ws))


@pytest.fixture(scope="module")
def real() -> dict[str, np.ndarray]:
    """Per digit, a real train image the domain's classifier recognises with confidence >= 0.9."""
    train, _ = data.load_splits()
    flat = train.images.reshape(len(train.images), -1).astype(np.float32) / 255.0
    classes, proba, top = builtin_domain("tiny-digits").identity(flat)
    out = {}
    for digit in ("0", *IDENTITIES):
        k = classes.index(digit)
        ok = np.flatnonzero((train.labels == int(digit)) & (top == k) & (proba[:, k] >= 0.9))
        assert len(ok), f"no confidently classified train image of {digit}"
        out[digit] = train.images[ok[0]]
    return out


# --- a clean run ---------------------------------------------------------------------------------


def test_every_row_gets_a_decision_and_a_reason(ws):
    seen: list[tuple[int, int]] = []
    res = filter_manifest(CANDIDATES, ws, FILTERED, FilterParams(), progress=lambda d, t: seen.append((d, t)))
    n = len(IDENTITIES) * PER_IDENTITY
    assert (res.total, seen[-1]) == (n, (n, n))

    before, after = rows(ws / CANDIDATES / "manifest.parquet"), rows(res.manifest)
    assert len(after) == len(before) == n
    for b, a in zip(before, after, strict=True):
        # The candidate columns pass through untouched, in the same order.
        assert [b[c] for c in ("sample_id", "image_sha256", "phash", "shard", "member")] == [
            a[c] for c in ("sample_id", "image_sha256", "phash", "shard", "member")
        ]
        assert b["decision"] is b["reason"] is b["contrast"] is None  # candidates carry no verdict
        assert a["decision"] in {"accepted", "rejected"}
        assert a["reason"]
        assert (a["decision"] == "accepted") == a["reason"].startswith("ok")
        # The tiny-digits domain runs every check, so every score is filled.
        assert a["identity_pred"] in {str(d) for d in range(10)}
        assert 0 <= a["identity_confidence"] <= 1 and a["contrast"] > 0 and a["nn_distance"] > 0
    # The model draws its digits well: with default thresholds most samples pass.
    assert res.accepted >= n // 2


def test_summary_agrees_with_the_manifest(ws, clean):
    plant(ws, sample_ids(clean, "5")[1], np.zeros((16, 16), np.uint8))  # so there is a rejection
    params = FilterParams(identity_threshold=0.6)
    res = filter_manifest(CANDIDATES, ws, FILTERED, params)
    summary = json.loads((ws / FILTERED / "filter.json").read_text())
    info = json.loads((ws / FILTERED / "filter-info.json").read_text())

    con = mf.connect(res.manifest)
    total, accepted, rejected = con.execute(
        "SELECT count(*), count(*) FILTER (decision = 'accepted'), count(*) FILTER (decision = 'rejected') "
        "FROM manifest"
    ).fetchone()
    by_reason = dict(
        con.execute("SELECT split_part(reason, ':', 1) AS r, count(*) FROM manifest GROUP BY r").fetchall()
    )
    assert rejected >= 1 and total == accepted + rejected
    assert (summary["total"], summary["accepted"], summary["rejected"]) == (total, accepted, rejected)
    assert summary["accepted_share"] == round(accepted / total, 4)
    assert summary["reasons"] == by_reason == res.reasons
    assert (res.total, res.accepted) == (total, accepted)
    assert info["params"] == params.model_dump()
    assert info["candidates"] == f"{CANDIDATES}/manifest.parquet"
    assert info["candidates_sha256"] == sha256_file(ws / CANDIDATES / "manifest.parquet")
    assert info["domain"]["domain"] == "tiny-digits"
    assert info["domain"]["train_split_sha256"] == data.load_splits()[0].digest
    # tiny-digits has no embedding model: the embedding checks are reported as not run, never as passed
    assert [w.split(":")[0] for w in info["not_checked"]] == [
        "near-duplicate check by embedding",
        "prompt-image agreement (CLIP score)",
    ]
    # Issue 23: the metrics file DVC tabulates holds numbers only; the rest is in filter-info.json.
    assert set(summary) == {"total", "accepted", "rejected", "accepted_share", "reasons"}
    assert all(isinstance(v, int) for v in summary["reasons"].values())


# --- planted faults, one at a time ---------------------------------------------------------------


def test_blank_image_is_low_contrast(ws, clean):
    target = sample_ids(clean, "5")[1]
    plant(ws, target, np.full((16, 16), 0, np.uint8))
    after = decisions(run_filter(ws))

    assert after[target][2] == "rejected"
    assert after[target][3].startswith("low_contrast: pixel std 0.000 < 0.1")
    assert_only_changed(clean, after, {target})


def test_another_digit_is_identity_mismatch(ws, clean, real):
    target = sample_ids(clean, "7")[2]
    plant(ws, target, real["0"])
    after = decisions(run_filter(ws))

    assert after[target][2] == "rejected"
    assert after[target][3] == "identity_mismatch: classifier says 0, not 7"
    assert_only_changed(clean, after, {target})


def test_a_real_train_image_is_a_memorised_copy(ws, clean, real):
    target = sample_ids(clean, "3")[0]
    plant(ws, target, real["3"])
    manifest = run_filter(ws)
    after = decisions(manifest)

    assert after[target][2] == "rejected"
    assert after[target][3].startswith("memorised_copy: RMS 0.0000 to a real train image < 0.05")
    (row,) = [r for r in rows(manifest) if r["sample_id"] == target]
    assert row["identity_pred"] == "3" and row["identity_confidence"] >= 0.9
    assert row["nn_distance"] < 1e-3
    assert_only_changed(clean, after, {target})


def test_a_copy_of_an_earlier_accepted_image_is_a_near_duplicate(ws, clean):
    accepted = sample_ids(clean, "7", "accepted")
    assert len(accepted) >= 2, "the fixture run needs two accepted 7s"
    first, later = accepted[0], accepted[-1]
    plant(ws, later, image_of(ws, first))  # same pixels (its own marking): same phash
    after = decisions(run_filter(ws))

    assert after[later][2] == "rejected"
    assert after[later][3] == f"near_duplicate: of {first} (phash distance 0)"
    assert after[later][4] == first
    assert after[first] == clean[first]  # the first one stays
    assert_only_changed(clean, after, {later})

    # -1 disables the check: the copy passes like its original.
    after = decisions(run_filter(ws, FilterParams(duplicate_distance=-1)))
    assert after[later][2:] == ("accepted", "ok: passed every check", None)
    assert_only_changed(clean, after, {later})


def test_rejected_rows_are_kept_and_do_not_hide_later_duplicates(ws, clean):
    """A rejected image is not a reference for near-duplicates: only accepted ones are."""
    ids = sample_ids(clean, "5")
    blank = np.zeros((16, 16), np.uint8)
    plant(ws, ids[0], blank)
    plant(ws, ids[3], blank)  # same image, but both are low contrast, not duplicates of each other
    after = decisions(run_filter(ws))

    assert len(after) == len(clean)
    for sid in (ids[0], ids[3]):
        assert after[sid][2] == "rejected" and after[sid][3].startswith("low_contrast")
        assert after[sid][4] is None
    assert_only_changed(clean, after, {ids[0], ids[3]})


# --- thresholds come from FilterParams -----------------------------------------------------------


def test_identity_threshold_one_rejects_everything_below_certainty(ws):
    manifest = run_filter(ws, FilterParams(identity_threshold=1.0))
    out = rows(manifest)
    below = [r for r in out if r["identity_confidence"] < 1.0]
    assert len(below) >= len(out) - 1  # calibrated probabilities are (almost) never exactly 1
    for r in below:
        assert r["decision"] == "rejected"
        assert r["reason"].startswith(("low_confidence:", "identity_mismatch:"))
        if r["identity_pred"] == r["identity"]:
            assert r["reason"].startswith("low_confidence:") and r["reason"].endswith("< 1.0")


def test_min_contrast_one_rejects_everything_as_low_contrast(ws):
    out = rows(run_filter(ws, FilterParams(min_contrast=1.0)))
    assert {r["decision"] for r in out} == {"rejected"}
    assert all(r["reason"].startswith("low_contrast:") for r in out)


def test_memorised_distance_above_any_rms_rejects_every_recognised_image(ws, clean):
    out = rows(run_filter(ws, FilterParams(memorised_distance=1.01)))
    for r in out:
        if clean[r["sample_id"]][2] == "accepted":
            assert r["reason"].startswith("memorised_copy:")
        assert r["decision"] == "rejected"


def test_duplicate_distance_64_keeps_one_image_per_identity(ws, clean):
    """Every pair of hashes is within 64 bits: per identity only the first passing image stays."""
    after = decisions(run_filter(ws, FilterParams(duplicate_distance=64)))
    changed: set[str] = set()
    for identity in IDENTITIES:
        passing = sample_ids(clean, identity, "accepted")
        assert passing, identity
        first, *rest = passing
        assert after[first] == clean[first]
        for sid in rest:
            assert after[sid][2] == "rejected"
            assert after[sid][3].startswith(f"near_duplicate: of {first} (phash distance ")
            assert after[sid][4] == first
            changed.add(sid)
    assert_only_changed(clean, after, changed)


# --- corrupted inputs: an error naming the sample or shard, and nothing written ------------------


def _flip_member_byte(ws: Path, sample_id: str) -> str:
    shard, member = location(ws, sample_id)
    with tarfile.open(shard) as tar:
        offset = tar.getmember(member).offset_data
    raw = bytearray(shard.read_bytes())
    raw[offset + 40] ^= 0xFF  # inside the PNG's data, after its header
    shard.write_bytes(bytes(raw))
    return rf"sample {sample_id}: image in shard .*shard-00000\.tar does not match its recorded sha256"


def _truncate(ws: Path, sample_id: str) -> str:
    shard, member = location(ws, sample_id)
    with tarfile.open(shard) as tar:
        offset = tar.getmember(member).offset_data
    with open(shard, "r+b") as f:
        f.truncate(offset + 10)  # mid-member
    return r"shard .*shard-00000\.tar is corrupted"


def _drop_member(ws: Path, sample_id: str) -> str:
    shard, member = location(ws, sample_id)
    write_tar(shard, [(n, b) for n, b in read_members(shard).items() if n != member])
    return rf"sample {sample_id}: member {sample_id}\.png is missing from shard .*shard-00000\.tar"


def _delete_shard(ws: Path, sample_id: str) -> str:
    location(ws, sample_id)[0].unlink()
    return r"shard .*shard-00000\.tar is missing"


@pytest.mark.parametrize("corrupt", [_flip_member_byte, _truncate, _drop_member, _delete_shard])
def test_a_corrupted_shard_is_an_error_and_writes_nothing(ws, clean, corrupt):
    target = sample_ids(clean, "5")[2]
    pattern = corrupt(ws, target)
    with pytest.raises(ManifestError, match=pattern):
        filter_manifest(CANDIDATES, ws, FILTERED)
    assert not (ws / FILTERED).exists()


def test_a_failed_run_leaves_an_earlier_output_as_it_was(ws, clean):
    manifest = run_filter(ws)
    outputs = [manifest, *(ws / FILTERED / n for n in ("filter.json", "filter-info.json"))]
    before = [p.read_bytes() for p in outputs]
    _flip_member_byte(ws, sample_ids(clean, "3")[0])
    with pytest.raises(ManifestError):
        filter_manifest(CANDIDATES, ws, FILTERED, FilterParams(min_contrast=1.0))
    assert [p.read_bytes() for p in outputs] == before
    assert sorted(p.name for p in (ws / FILTERED).iterdir()) == [
        "filter-info.json",
        "filter.json",
        "manifest.parquet",
    ]


def test_an_empty_manifest_is_an_error(ws):
    path = ws / CANDIDATES / "manifest.parquet"
    mf.write_table(mf.read_table(path).slice(0, 0), path)
    with pytest.raises(ManifestError, match="no rows"):
        filter_manifest(CANDIDATES, ws, FILTERED)


# --- row order ----------------------------------------------------------------------------------


def test_scores_follow_the_sample_when_shards_interleave(ws, clean):
    """Split the one shard into three and interleave the rows: each row must still be judged on its own
    image (a manifest's row order is not promised to follow its shards)."""
    path = ws / CANDIDATES / "manifest.parquet"
    table = mf.read_table(path)
    old = ws / table["shard"][0].as_py()
    members = read_members(old)
    shards = [f"{CANDIDATES}/shards/part-{j}.tar" for j in range(3)]
    groups: list[list[tuple[str, bytes]]] = [[], [], []]
    new_shard = []
    for i, member in enumerate(table["member"].to_pylist()):
        groups[i % 3].append((member, members[member]))
        new_shard.append(shards[i % 3])
    for rel, group in zip(shards, groups, strict=True):
        write_tar(ws / rel, group)
    old.unlink()
    idx = table.schema.get_field_index("shard")
    table = table.set_column(idx, mf.SCHEMA.field("shard"), pa.array(new_shard, pa.string()))
    mf.write_table(table, path)  # row order unchanged (plan order), shards now interleave

    after = decisions(run_filter(ws))
    assert after == clean


def _bomb_header() -> bytes:
    """A PNG whose header says 30000 x 30000 (900M pixels): refused from the header, never decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "kind, said",
    [
        ("bomb", "the image is 30000x30000 pixels, over synthreg's limit"),
        ("truncated", "the image is not readable"),
        ("jpeg", "the image is not a PNG (no PNG signature)"),
    ],
)
def test_a_hostile_image_with_a_matching_digest_is_named_not_a_traceback(ws, clean, kind: str, said: str):
    """Issue 24, family 4: an insider puts a hostile image in a shard and its digest in the manifest."""
    from PIL import Image

    [victim] = sample_ids(clean, "7")[:1]
    good = image_of(ws, victim)
    if kind == "bomb":
        png = _bomb_header()
    elif kind == "truncated":
        png = good[: len(good) // 2]
    else:
        buf = io.BytesIO()
        Image.new("L", (16, 16), 128).save(buf, format="JPEG")
        png = buf.getvalue()
    shard, member = location(ws, victim)
    members = read_members(shard)
    members[member] = png
    write_tar(shard, list(members.items()))
    set_cells(ws / CANDIDATES / "manifest.parquet", victim, image_sha256=sha256_bytes(png))
    with pytest.raises(ManifestError) as e:
        run_filter(ws)
    assert str(e.value).startswith(f"sample '{victim}': {said}"), str(e.value)
    assert not (ws / FILTERED / "manifest.parquet").exists()


def test_an_image_whose_marking_names_another_sample_is_rejected(ws, clean):
    """Issue 24, family 3: a PNG copied whole from another sample carries that sample's marking."""
    accepted = sample_ids(clean, "7", "accepted")
    first, later = accepted[0], accepted[-1]
    png = image_of(ws, first)  # its bytes, marking and all
    shard, member = location(ws, later)
    members = read_members(shard)
    members[member] = png
    write_tar(shard, list(members.items()))
    set_cells(ws / CANDIDATES / "manifest.parquet", later, image_sha256=sha256_bytes(png))
    after = decisions(run_filter(ws))
    assert after[later][2:4] == (
        "rejected",
        f"bad_marking: its XMP marking names sample '{first}', not this one",
    )
    assert_only_changed(clean, after, {later})
