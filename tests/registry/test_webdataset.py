"""Released shards load where people load data: WebDataset (2 DataLoader workers) and Hugging Face
`datasets` (`load_dataset(release_folder)` through the card's `configs:`), with image and label
together from the shard's `.json` / `.cls` sidecars."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from registry.store import manifest as mf
from registry.store.releases import load_release
from registry.store.shards import members_from_bytes
from registry.store.webdataset import with_sidecars
from tests.registry.conftest import Built, folder

IDENTITIES = ["1", "4", "7"]  # the small recipe's, in order: .cls is the index


def manifest_rows(ws: Path) -> dict[str, dict]:
    con = mf.connect(folder(ws, "1.0.0") / "data/manifest.parquet")
    cur = con.execute(
        "SELECT sample_id, identity, attributes, decision, reason, seed, prompt, generator_name, "
        "weights_digest, width, height FROM manifest"
    )
    names = [d[0] for d in cur.description]
    return {r[names.index("sample_id")]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def shard_paths(ws: Path) -> list[Path]:
    return [folder(ws, "1.0.0") / "data" / s.path for s in load_release(ws, "digits@1.0.0").shards]


def test_every_image_has_its_json_and_cls_sidecar(released: Built) -> None:
    rows = manifest_rows(released.ws)
    seen = set()
    for path in shard_paths(released.ws):
        found = members_from_bytes(path.read_bytes())
        keys = [m.removesuffix(".png") for m in found if m.endswith(".png")]
        assert list(found) == [f"{k}.{ext}" for k in keys for ext in ("png", "json", "cls")]
        for k in keys:
            side = json.loads(bytes(found[f"{k}.json"]))
            row = rows[k]
            assert side == {
                "sample_id": k,
                "identity": row["identity"],
                "attributes": row["attributes"],
                "decision": row["decision"],
                "reason": row["reason"],
                "seed": row["seed"],
                "prompt": row["prompt"],
                "generator_name": "tiny-digits",
                "weights_digest": row["weights_digest"],
            }
            assert bytes(found[f"{k}.cls"]) == str(IDENTITIES.index(row["identity"])).encode()
            seen.add(k)
    assert seen == set(rows)


def test_sidecars_are_added_once_and_deterministically(released: Built) -> None:
    path = shard_paths(released.ws)[0]
    data = path.read_bytes()
    fields = ("sample_id", "identity", "attributes", "decision", "reason", "seed", "prompt")
    rows = {
        f"{k}.png": {f: r[f] for f in (*fields, "generator_name", "weights_digest")}
        for k, r in manifest_rows(released.ws).items()
    }
    assert with_sidecars(data, rows, IDENTITIES) == data  # a parent's shard, re-released, is unchanged


def test_webdataset_with_two_dataloader_workers(released: Built) -> None:
    wds = pytest.importorskip("webdataset")
    import torch

    rows = manifest_rows(released.ws)
    urls = [str(p) for p in shard_paths(released.ws)]
    assert len(urls) == 2  # as many shards as workers
    ds = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False)
        .decode("pil")
        .to_tuple("__key__", "png", "json", "cls")
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = {key: (image, meta, cls) for key, image, meta, cls in loader}
    assert set(got) == set(rows)  # every sample once, across both workers
    for key, (image, meta, cls) in got.items():
        assert image.size == (rows[key]["width"], rows[key]["height"])
        assert (meta["identity"], meta["decision"]) == (rows[key]["identity"], rows[key]["decision"])
        assert cls == IDENTITIES.index(rows[key]["identity"])


def test_load_dataset_of_the_release_folder(
    released: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = manifest_rows(released.ws)
    ds = datasets.load_dataset(
        str(folder(released.ws, "1.0.0")), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(ds) == len(rows)
    for item in ds:
        row = rows[item["json"]["sample_id"]]
        assert item["json"]["decision"] == row["decision"]
        assert item["cls"] == IDENTITIES.index(row["identity"])
        assert item["png"].size == (row["width"], row["height"])


def test_load_dataset_of_the_manifest_config(
    released: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`datasets` has no type for the manifest's map columns; the flat copy (maps as JSON text), a
    signed subject like every other file in data/, loads with the parquet builder as the card says."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = manifest_rows(released.ws)
    release = folder(released.ws, "1.0.0")
    flat = release / "data/manifest-flat.parquet"
    assert (
        'load_dataset("parquet", data_files="data/manifest-flat.parquet"'
        in (release / "README.md").read_text()
    )
    ds = datasets.load_dataset("parquet", data_files=str(flat), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(rows) and ds.column_names == mf.SCHEMA.names
    shipped = {f"data/{s.path}" for s in load_release(released.ws, "digits@1.0.0").shards}
    for item in ds:
        row = rows[item["sample_id"]]
        # Issue 23: the released shard, inside the release folder, holding the row's image: no join.
        assert item["shard"] in shipped
        assert item["member"] in members_from_bytes((release / item["shard"]).read_bytes())
        assert json.loads(item["attributes"]) == dict(row["attributes"])
        assert (item["identity"], item["decision"], item["seed"], item["prompt"]) == (
            row["identity"],
            row["decision"],
            row["seed"],
            row["prompt"],
        )
    assert list(json.loads(ds[0]["library_versions"]))  # every map column is JSON text
    with pytest.raises(ValueError, match="does not have a datasets dtype"):  # why the flat copy exists
        datasets.Dataset.from_parquet(str(release / "data/manifest.parquet"))


def other_release(released: Built, dst: Path) -> tuple[Path, set[str]]:
    """Another workspace's digits@1.0.0: the same folder name and version, other content (half the
    samples, so another manifest digest), its card rendered for that record as its release would."""
    import io
    import shutil
    import tarfile

    from registry.exports.card import render_card
    from registry.releases.report import read_report

    src = folder(released.ws, "1.0.0")
    out = dst / "releases/digits/1.0.0"
    shutil.copytree(src, out)
    kept: set[str] = set()
    for path in sorted((out / "data/shards").glob("*.tar")):
        members = members_from_bytes(path.read_bytes())
        keys = sorted({m.rsplit(".", 1)[0] for m in members})[::2]
        with tarfile.open(path, "w") as t:
            for m, data in sorted(members.items()):
                if m.rsplit(".", 1)[0] in keys:
                    info = tarfile.TarInfo(m)
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(bytes(data)))
        kept |= set(keys)
    record = load_release(released.ws, "digits@1.0.0")
    other = record.model_copy(update={"manifest_sha256": "f" * 64})
    report = read_report(src)
    assert report is not None
    other_report = report.model_copy(update={"manifest_sha256": other.manifest_sha256})
    (out / "README.md").write_text(render_card(other, other_report))
    return out, kept


@pytest.mark.parametrize("streaming", [False, True])
def test_two_releases_with_one_version_never_share_a_cache_entry(
    released: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    """Issue 23: `datasets` served the first release's rows for the second (same folder name, same
    `default` config). Each release's config carries its manifest digest: in either order, with one
    cache, each load returns its own rows; loading the first again still does."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a = folder(released.ws, "1.0.0")
    ids_a = set(manifest_rows(released.ws))
    b, ids_b = other_release(released, tmp_path / "b")
    assert ids_b < ids_a and a.name == b.name
    cache = str(tmp_path / "hf")

    def ids(path: Path) -> set[str]:
        ds = datasets.load_dataset(str(path), split="train", cache_dir=cache, streaming=streaming)
        return {item["json"]["sample_id"] for item in ds}

    for first, second in ((a, b), (b, a)):
        assert (ids(first), ids(second)) == (
            ids_a if first == a else ids_b,
            ids_a if second == a else ids_b,
        )
    assert ids(a) == ids_a and ids(b) == ids_b


def guide_snippet(marker: str) -> str:
    """The first ```python block of docs/guide/review.md that contains ``marker``, as written."""
    from tests.conftest import REPO

    text = (REPO / "docs/guide/review.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    return next(b for b in blocks if marker in b)


def test_the_guides_loading_example_runs_without_warnings(released: Built, tmp_path: Path) -> None:
    """Issue 23: the guide's WebDataset and `datasets` example, run as written from the workspace in a
    fresh Python, prints no warning (webdataset 1.x warned about `shardshuffle` left unset) and reads
    every released sample."""
    import os
    import subprocess
    import sys

    pytest.importorskip("webdataset")
    pytest.importorskip("datasets")
    code = guide_snippet("import webdataset as wds")
    assert "shardshuffle=False" in code
    check = "\nprint(len(list(ds)), len(hf))\n"
    env = os.environ | {
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PYTHONWARNINGS": "",  # the interpreter's default filters, as a user's script gets them
    }
    proc = subprocess.run(
        [sys.executable, "-c", code + check], cwd=released.ws, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    n = len(manifest_rows(released.ws))
    assert proc.stdout.split() == [str(n), str(n)]
    assert "Warning" not in proc.stderr and "warn" not in proc.stderr.lower(), proc.stderr


@pytest.mark.parametrize("prompt_suffix", ["", ' "quoted" é\t'])  # the second: escaped, row by row
def test_sidecars_built_column_wise_are_those_of_a_row_at_a_time(released: Built, prompt_suffix: str):
    """issue 22: release builds the .json/.cls sidecars column-wise in Arrow; the bytes are those of
    ``sidecar_members``, and an identity the classes lack is -1 as before."""
    import pyarrow.compute as pc

    from registry.store.webdataset import SIDECAR_FIELDS, sidecar_members, sidecars_of

    con = mf.connect(folder(released.ws, "1.0.0") / "data/manifest.parquet")
    table = con.sql(f"SELECT member, {', '.join(SIDECAR_FIELDS)} FROM manifest").to_arrow_table()
    i = table.schema.get_field_index("prompt")
    table = table.set_column(
        i, "prompt", pc.binary_join_element_wise(table.column("prompt"), prompt_suffix, "")
    )
    classes = IDENTITIES[:2]  # "7" is absent: -1
    rows = table.to_pylist(maps_as_pydicts="lossy")
    expected = {r["member"]: tuple(b for _, b in sidecar_members(r["member"], r, classes)) for r in rows}
    assert sidecars_of(table, classes) == expected
    assert {cls for _, cls in expected.values()} == {b"0", b"1", b"-1"}


def test_a_string_is_plain_exactly_when_json_writes_it_as_itself():
    """issue 22: the column-wise sidecars need strings `json.dumps` writes unescaped; `_plain` tells them
    by a table of bytes, every byte of a column at once. Each character up to U+00FF and a few beyond,
    alone and inside a longer string, in a slice of a column (whose bytes outside it do not count);
    bytes under a null only make it answer False, never True."""
    import pyarrow as pa

    from registry.store.webdataset import _plain

    for code in [*range(0x100), 0x2028, 0x1F600]:
        text = f"ab{chr(code)}cd"
        expected = json.dumps(text) == f'"{text}"'
        column = pa.chunked_array([pa.array(["plain", text, "plain"])])
        assert _plain(column) is expected, hex(code)
        inside = pa.array(["é", "plain", text, "plain", "\\"]).slice(1, 3)
        assert _plain(pa.chunked_array([inside])) is expected, hex(code)
        assert _plain(pa.chunked_array([pa.array(['"x']).slice(0, 0), pa.array([text])])) is expected
    bad = pa.array(["x", "y\n"]).slice(0, 1)  # a slice that ends before the bad byte
    assert _plain(pa.chunked_array([bad])) is True
    assert _plain(pa.chunked_array([pa.array([None, "x"], pa.string())])) is True
    validity = pa.py_buffer(bytes([0b10]))  # row 0 null, yet its offsets span a quote
    offsets = pa.py_buffer(np.array([0, 1, 2], np.int32).tobytes())
    under = pa.Array.from_buffers(pa.string(), 2, [validity, offsets, pa.py_buffer(b'"x')])
    assert under.to_pylist() == [None, "x"]
    assert _plain(pa.chunked_array([under])) is False  # the slower builder then escapes nothing wrongly
