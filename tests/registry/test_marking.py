"""Every generated image says it is synthetic (XMP in iTXt, IPTC trainedAlgorithmicMedia, sample id,
generator, weights digest), covered by its digest; `trace image` and `verify` read it and report a
stripped or edited marking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from generators.shard import encode_png
from registry.cli import app
from registry.core.errors import GeneratorError
from registry.releases.shard_check import check_shard
from registry.store import manifest as mf
from registry.store.marking import (
    DIGITAL_SOURCE_TYPE,
    XMP_KEYWORD,
    Marking,
    check_markable,
    mark_png,
    marking_problems,
    read_marking,
    xmp_packet,
)
from registry.store.releases import load_release
from registry.store.shards import members_from_bytes, tar_bytes
from tests.registry.conftest import Built, folder, sha256, table_rows

runner = CliRunner()
WEIGHTS = "ab" * 32


def image() -> np.ndarray:
    return (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8)


def test_marking_round_trips_and_is_part_of_the_bytes() -> None:
    hostile = Marking("id-\"<&>'", "gen <x>", WEIGHTS)
    png = encode_png(image(), hostile)
    assert read_marking(png) == hostile  # attribute escaping undone exactly
    assert marking_problems(png, hostile) == []
    assert encode_png(image(), hostile) == png  # deterministic: reproduce still matches bit for bit
    plain = encode_png(image())
    assert read_marking(plain) is None
    assert marking_problems(plain, hostile) == [
        "carries no synthetic-media marking (no XMP DigitalSourceType in the PNG)"
    ]
    with Image.open(__import__("io").BytesIO(png)) as im:  # where other tools look (XMP spec part 3)
        assert DIGITAL_SOURCE_TYPE in im.info["XML:com.adobe.xmp"]
        assert np.array_equal(np.asarray(im), image())  # pixels untouched


HOSTILE = [
    'gen "quoted"',  # quoteattr switches to single quotes
    'it\'s "both"',  # both quotes: double, with &quot;
    "gen\nline\r\nand\ttab",  # quoteattr writes &#10; &#13; &#9;
    "a & b <c> &amp; &#10; &#x41;",  # text that looks like references stays text
    "unicode \u00e9\u4e2d\U0001f600 \u2028",
    "x synthreg:weightsDigest='forged'",  # looks like an attribute; must stay inside its value
    'x synthreg:sampleId="forged"',
]


def pillow_png(pixels: np.ndarray, m: Marking) -> bytes:
    """How generation encoded a marked PNG before issue 22: Pillow with the packet in a PngInfo."""
    import io

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt(XMP_KEYWORD, xmp_packet(m), zip=False)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@pytest.mark.parametrize("value", ["digits-1-000001-0123abcd", *HOSTILE])
def test_the_spliced_marking_is_the_chunk_pillow_writes(value: str) -> None:
    """Issue 22: generation encodes once, unmarked, and splices the marking in after IHDR, the chunk
    made once a generator with only the sample id filled in; the bytes are those Pillow writes with a
    PngInfo, for grey and colour images and for values that need quoting."""
    rgb = (np.random.default_rng(1).random((9, 12, 3)) * 255).astype(np.uint8)
    for m in (Marking(value, "gen", WEIGHTS), Marking("id", value, WEIGHTS), Marking(value, value, WEIGHTS)):
        for pixels in (image(), rgb):
            assert encode_png(pixels, m) == pillow_png(pixels, m)
    with pytest.raises(ValueError, match="needs a PNG that starts with its IHDR chunk"):
        mark_png(b"GIF89a" + bytes(40), Marking("id", "gen", WEIGHTS))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_round_trip(value: str) -> None:
    for m in (
        Marking("id", value, WEIGHTS),
        Marking(value, "gen", WEIGHTS),
        Marking("id", "gen", value),
        Marking(value, value, value, value),
    ):
        png = encode_png(image(), m)
        assert read_marking(png) == m, xmp_packet(m)
        assert marking_problems(png, m) == []
        other = m._replace(generator=m.generator + "!")
        assert marking_problems(png, other)[-1] == (  # the parse path, not the byte-equal fast path
            f"marking names generator {m.generator!r} but the record says {other.generator!r}"
        )


def test_a_marking_over_the_packet_limit_is_refused() -> None:
    check_markable(Marking("id", "g" * 60_000, WEIGHTS))
    with pytest.raises(GeneratorError, match=r"its generator is 70000 characters\); shorten"):
        check_markable(Marking("id", "g" * 70_000, WEIGHTS))
    with pytest.raises(GeneratorError, match=r"its marking would be 66[0-9]{3} bytes"):
        check_markable(Marking("id", "<" * 16_500, WEIGHTS))  # escaped, &lt; is 4 bytes: 66,000


def test_every_released_image_is_marked_by_its_record(released: Built) -> None:
    ws = released.ws
    record = load_release(ws, "digits@1.0.0")
    rows = (
        mf.connect(folder(ws, "1.0.0") / "data/manifest.parquet")
        .execute("SELECT sample_id, member, generator_name, weights_digest FROM manifest")
        .fetchall()
    )
    images = {}
    for s in record.shards:
        images |= members_from_bytes((folder(ws, "1.0.0") / "data" / s.path).read_bytes())
    for sid, member, gen, weights in rows:
        assert read_marking(images[member]) == Marking(sid, gen, weights)
    res = runner.invoke(app, ["verify", "digits@1.0.0", "--json", "-w", str(ws)])
    assert res.exit_code == 0 and json.loads(res.stdout)["unmarked"] == {}


def one_image(ws: Path) -> tuple[str, str, bytes]:
    """(sample id, member, PNG bytes) of the first image in digits@1.0.0's first shard."""
    record = load_release(ws, "digits@1.0.0")
    shard = folder(ws, "1.0.0") / "data" / record.shards[0].path
    member, data = sorted(
        (m, d) for m, d in members_from_bytes(shard.read_bytes()).items() if m.endswith(".png")
    )[0]
    sid = member.removesuffix(".png")
    return sid, member, bytes(data)


def test_trace_image_reports_a_stripped_or_edited_marking(released: Built, tmp_path: Path) -> None:
    ws = released.ws
    sid, _, png = one_image(ws)
    marked = tmp_path / "marked.png"
    marked.write_bytes(png)
    res = runner.invoke(app, ["trace", "image", str(marked), "-w", str(ws)])
    assert res.exit_code == 0, res.output
    (mark,) = [r for r in table_rows(res.stdout) if r[0] == "marking"]
    # (the weights digest is folded onto the next line of the cell)
    assert mark[1].startswith(f"marked trainedAlgorithmicMedia: sample {sid}, generator tiny-digits, weights")
    assert "marking problem" not in res.stdout

    stripped = tmp_path / "stripped.png"
    with Image.open(marked) as im:
        im.save(stripped)  # what a re-save or a metadata scrubber does
    res = runner.invoke(app, ["trace", "image", str(stripped), "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert "by perceptual hash" in res.stdout  # the bytes changed, the picture did not
    assert [r for r in table_rows(res.stdout) if r[0].startswith("marking")] == [
        ["marking", "no synthetic-media marking"],
        [
            "marking problem",
            "the file carries no synthetic-media marking (stripped, or made before synthreg marked)",
        ],
    ]

    other = "digits-someone-else"
    found = read_marking(png)
    assert found is not None
    edited = tmp_path / "edited.png"  # a valid PNG re-marked as another sample (chunk CRC and all)
    with Image.open(marked) as im:
        edited.write_bytes(encode_png(np.asarray(im), Marking(other, found.generator, found.weights_digest)))
    res = runner.invoke(app, ["trace", "image", str(edited), "--json", "-w", str(ws)])
    assert res.exit_code == 0, res.output
    marking = json.loads(res.stdout)["marking"]
    assert marking["found"]["sample_id"] == other
    assert marking["problems"] == [f"marking names sample id {other!r} but the record says {sid!r}"]


def test_verify_reports_the_marking_of_an_altered_image(released_copy: Path) -> None:
    ws = released_copy
    record = load_release(ws, "digits@1.0.0")
    shard = folder(ws, "1.0.0") / "data" / record.shards[0].path
    members = list(members_from_bytes(shard.read_bytes()).items())  # image, .json, .cls, image, ...
    (member, png), rest = members[0], members[1:]
    with Image.open(__import__("io").BytesIO(bytes(png))) as im:
        stripped = encode_png(np.asarray(im))
    shard.unlink()  # DVC may link it to its cache: replace the file, never write through it
    shard.write_bytes(tar_bytes([(member, stripped), *((m, bytes(d)) for m, d in rest)]))
    res = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert res.exit_code == 1
    sid = member.removesuffix(".png")
    assert (
        f"  sample {sid}: corrupted: image bytes in {shard.name} do not match the recorded sha256; "
        "its marking: carries no synthetic-media marking (no XMP DigitalSourceType in the PNG)"
    ) in res.stdout.splitlines()


def test_verify_notes_unmarked_images_whose_bytes_are_as_signed(tmp_path: Path) -> None:
    """An image made before synthreg marked images: its bytes are what was signed, so it is not a
    failure, but verify says it is not marked."""
    plain, marked = encode_png(image()), encode_png(image(), Marking("s-2", "g", WEIGHTS))
    data = tar_bytes([("s-1.png", plain), ("s-2.png", marked)])
    path = tmp_path / "shard.tar"
    path.write_bytes(data)
    members = {"s-1.png": ("s-1", sha256_of(plain)), "s-2.png": ("s-2", sha256_of(marked))}
    marks = {"s-1": Marking("s-1", "g", WEIGHTS), "s-2": Marking("s-2", "g", WEIGHTS)}
    problems, bad, unmarked = check_shard(path, sha256(path), members, marks)
    assert (problems, bad) == ([], {})
    assert unmarked == {"s-1": "carries no synthetic-media marking (no XMP DigitalSourceType in the PNG)"}


def sha256_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_verify_checks_the_sidecars_a_loader_reads_as_labels(tmp_path: Path) -> None:
    """A shard signed with a `.json` or `.cls` sidecar that disagrees with the manifest (what
    WebDataset and `load_dataset(folder)` read as the label), or with a member no row names, fails."""
    png = encode_png(image(), Marking("s-1", "g", WEIGHTS))
    row_json, row_cls = b'{"identity": "3"}', b"3"
    members = {"s-1.png": ("s-1", sha256_of(png))}
    marks = {"s-1": Marking("s-1", "g", WEIGHTS)}
    cars = {"s-1.json": ("s-1", row_json), "s-1.cls": ("s-1", row_cls)}
    path = tmp_path / "shard.tar"
    path.write_bytes(tar_bytes([("s-1.png", png), ("s-1.json", row_json), ("s-1.cls", row_cls)]))
    assert check_shard(path, sha256(path), members, marks, sidecars=cars)[:2] == ([], {})
    path.write_bytes(tar_bytes([("s-1.png", png), ("s-1.json", row_json), ("s-1.cls", b"7")]))
    problems, bad, _ = check_shard(path, sha256(path), members, marks, sidecars=cars)
    assert (problems, bad) == (
        [],
        {"s-1": "its sidecar s-1.cls in shard.tar differs from the manifest's record"},
    )
    path.write_bytes(tar_bytes([("s-1.png", png), ("s-1.json", row_json), ("s-9.png", png)]))
    problems, bad, _ = check_shard(path, sha256(path), members, marks, sidecars=cars)
    assert problems == ["shard shard.tar holds 1 member(s) no manifest row names, first 's-9.png'"]
