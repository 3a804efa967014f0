"""Every generated image says it is synthetic: an XMP packet in a PNG iTXt chunk, written at generation,
so the image's sha256 (and the signed release) cover it.

    xmp = xmp_packet(Marking("digits-000001", "tiny-digits", weights_digest))  # what encode_png embeds
    read_marking(png_bytes)                   # -> Marking, or None when the PNG carries none
    marking_problems(png_bytes, expected)     # -> [] when the marking is there and says what the record says

The packet holds IPTC's ``Iptc4xmpExt:DigitalSourceType`` = trainedAlgorithmicMedia (the IPTC term for
generative output, the value C2PA's ``c2pa.actions`` use too; EU AI Act Art. 50(2) asks for a
machine-readable marking of synthetic images) and, in synthreg's own namespace, the sample id, the
generator's name and its weights digest. It is deterministic (no time, no tool version), so
``synthreg reproduce`` still regenerates an image bit for bit. The keyword ``XML:com.adobe.xmp`` is
where the XMP specification (part 3, PNG) puts the packet, so exiftool and Pillow find it.

Reading parses PNG chunks up to the first IDAT without decoding pixels, so ``verify`` can check every
image of a large release cheaply. This is the marking every image gets; a recipe may add C2PA content
credentials on top (registry.trust.credentials), signed after this packet is embedded.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from collections.abc import Iterator
from typing import NamedTuple
from xml.sax.saxutils import quoteattr

from registry.core.errors import GeneratorError
from registry.core.images import PNG_SIGNATURE
from registry.core.names import shown
from registry.records.lineage import ImageMatch, MarkingCheck

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
XMP_KEYWORD = "XML:com.adobe.xmp"
NS_SYNTHREG = "https://synthreg.dev/xmp/1.0/"
_MAX_PACKET = 64 * 1024  # a marking is ~0.7 KB; anything far larger is not ours and is not parsed


class Marking(NamedTuple):
    """What a marking says (immutable; a tuple so that verify can make one per image cheaply)."""

    sample_id: str
    generator: str
    weights_digest: str
    digital_source_type: str = DIGITAL_SOURCE_TYPE


_PLAIN = re.compile(r"[^&<>\"'\n\r\t]*")
_PLAIN_IDS = re.compile(
    r"[A-Za-z0-9._-]+(?:\n[A-Za-z0-9._-]+)*"
)  # ids quoted as themselves, a byte a character


def _quoteattr(value: str) -> str:
    """``quoteattr(value)``, without its escaping work for the usual value that needs none (verify builds a
    packet per image)."""
    return f'"{value}"' if _PLAIN.fullmatch(value) else quoteattr(value)


def xmp_packet(m: Marking) -> str:
    """The XMP packet for ``m``: RDF/XML with the IPTC digital source type and synthreg's fields."""
    head, tail = _packet_parts(m.digital_source_type, m.generator, m.weights_digest)
    return head + _quoteattr(m.sample_id) + tail


@functools.lru_cache(maxsize=256)
def _packet_parts(digital_source_type: str, generator: str, weights_digest: str) -> tuple[str, str]:
    """The packet before and after the sample id's quoted value: the same for every image of a generator,
    so verify quotes only the sample id per image (issue 22)."""
    head = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f' xmlns:synthreg="{NS_SYNTHREG}"'
        f" Iptc4xmpExt:DigitalSourceType={_quoteattr(digital_source_type)}"
        " synthreg:sampleId="
    )
    tail = (
        f" synthreg:generator={_quoteattr(generator)}"
        f" synthreg:weightsDigest={_quoteattr(weights_digest)}/>"
        "</rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    )
    return head, tail


@functools.lru_cache(maxsize=256)
def _chunk_parts(digital_source_type: str, generator: str, weights_digest: str) -> tuple[bytes, int, bytes]:
    """``_packet_parts`` as the bytes of the iTXt chunk body (type included) around the sample id, with
    the CRC of the part before it (where every image's chunk CRC starts)."""
    head, tail = _packet_parts(digital_source_type, generator, weights_digest)
    chunk_head = b"iTXt" + XMP_KEYWORD.encode() + b"\0\0\0\0\0" + head.encode()
    return chunk_head, zlib.crc32(chunk_head), tail.encode()


def check_markable(m: Marking) -> None:
    """Refuse a marking whose packet would exceed what readers parse (``_MAX_PACKET``): cut there, it
    would read back as other values than were written. Generation calls this for every request before
    anything is written."""
    size = len(xmp_packet(m).encode())
    if size > _MAX_PACKET:
        longest = max(
            ("sample id", m.sample_id),
            ("generator", m.generator),
            ("weights digest", m.weights_digest),
            key=lambda kv: len(kv[1]),
        )
        raise GeneratorError(
            f"sample {m.sample_id[:40]!r}: its marking would be {size} bytes, over the {_MAX_PACKET} a "
            f"reader parses (its {longest[0]} is {len(longest[1])} characters); shorten the generator name, "
            "dataset name or prompt identity that make it"
        )


def walk_chunks(png: bytes | memoryview) -> Iterator[tuple[int, bytes, int]]:
    """(offset, type, data length) of each whole chunk of ``png``, reading headers only; nothing for a
    file that is not a PNG, and it stops at a chunk the file cuts short."""
    data = memoryview(png)
    if bytes(data[:8]) != PNG_SIGNATURE:
        return
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if pos + 12 + length > len(data):
            return
        yield pos, bytes(data[pos + 4 : pos + 8]), length
        pos += 12 + length


def _chunks(png: bytes | memoryview) -> list[tuple[bytes, bytes]]:
    """(type, data) of the chunks before the image data; a PNG that is not one gives []."""
    data = memoryview(png)
    out = []
    for pos, kind, length in walk_chunks(data):
        if kind == b"IDAT":
            break
        out.append((kind, bytes(data[pos + 8 : pos + 8 + length])))
    return out


def _xmp_text(png: bytes | memoryview) -> str | None:
    for kind, body in _chunks(png):
        if kind != b"iTXt" or not body.startswith(XMP_KEYWORD.encode() + b"\0"):
            continue
        rest = body[len(XMP_KEYWORD) + 1 :]
        compressed, _method = rest[0], rest[1]
        rest = rest[2:]
        _lang, _, rest = rest.partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        if compressed:
            text = zlib.decompressobj().decompress(text, _MAX_PACKET)
        return text[:_MAX_PACKET].decode("utf-8", errors="replace")
    return None


# One attribute, in either quote style: quoteattr uses single quotes when the value holds a double quote
# (and no single quote). Matched left to right, each value whole, so a value that looks like an attribute
# (a generator named `x synthreg:weightsDigest="..."`) is never taken for one.
_ATTRIBUTE = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# What quoteattr writes (&amp; &lt; &gt; &quot; and &#10; &#13; &#9;), and any XML character reference.
_ENTITY = re.compile(r"&(?:#([0-9]+)|#x([0-9a-fA-F]+)|(amp|lt|gt|quot|apos));")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _unescape(value: str) -> str:
    def one(m: re.Match[str]) -> str:
        if m.group(3):
            return _NAMED[m.group(3)]
        code = int(m.group(1), 10) if m.group(1) else int(m.group(2), 16)
        return chr(code) if 0 < code <= 0x10FFFF else m.group(0)  # out of range: left as written

    return _ENTITY.sub(one, value)  # one pass: "&amp;#10;" is the text "&#10;", not a newline


def _attrs(text: str) -> dict[str, str]:
    # The packet is ours in form (attributes on one rdf:Description); a regex over it avoids running a
    # full XML parser (entity expansion) on bytes that come from an untrusted file. The first of a name
    # counts (XML forbids a second).
    out: dict[str, str] = {}
    for m in _ATTRIBUTE.finditer(text):
        raw = m.group(2) if m.group(2) is not None else m.group(3)
        out.setdefault(m.group(1), _unescape(raw))
    return out


def read_marking(png: bytes | memoryview) -> Marking | None:
    """The marking in ``png``, or None when it carries no XMP digital source type."""
    text = _xmp_text(png)
    if text is None:
        return None
    attrs = _attrs(text)
    source_type = attrs.get("Iptc4xmpExt:DigitalSourceType")
    if source_type is None:
        return None
    return Marking(
        sample_id=attrs.get("synthreg:sampleId", ""),
        generator=attrs.get("synthreg:generator", ""),
        weights_digest=attrs.get("synthreg:weightsDigest", ""),
        digital_source_type=source_type,
    )


def _chunk(m: Marking) -> bytes:
    """The iTXt chunk, header and CRC included, that generation writes for ``m`` (Pillow's ``add_itxt``
    uncompressed: keyword, NUL, flag 0, method 0, empty language and translated keyword). The parts
    around the sample id, and their CRC, are made once per generator; per image only the id is quoted
    and folded into the CRC (issue 22)."""
    head, head_crc, tail = _chunk_parts(m.digital_source_type, m.generator, m.weights_digest)
    sample_id = _quoteattr(m.sample_id).encode()
    crc = zlib.crc32(tail, zlib.crc32(sample_id, head_crc))
    length = len(head) + len(sample_id) + len(tail) - 4  # the chunk type is not counted
    return struct.pack(">I", length) + head + sample_id + tail + struct.pack(">I", crc)


def all_marked(
    data: bytes, starts: list[int], sample_ids: list[str], generators: list[str], weights: list[str]
) -> bool:
    """Whether each image held in ``data`` at ``starts`` (the offsets of the PNGs' first bytes) carries,
    right after its IHDR, byte for byte the chunk generation writes for its row's marking (sample id,
    generator, weights digest), CRC included: what ``marking_problems`` accepts first, and then
    ``foreign_sample`` too. Compared in place, a shard at a time, from one template a generator (issue
    22). False when any differs, or when an id needs XML escaping; the caller then checks image by image.
    The caller has checked that each image is whole (``images.all_whole``), so its chunks lie inside it,
    and that the sample ids are distinct (the image-by-image check holds one marking a sample id)."""
    joined = "\n".join(sample_ids)  # no plain id holds a newline: it must split back into the ids
    if not _PLAIN_IDS.fullmatch(joined) or joined.count("\n") != len(sample_ids) - 1:
        return False
    pack = struct.Struct(">I").pack
    parts = {}
    for pair in set(zip(generators, weights, strict=True)):
        head, crc, tail = _chunk_parts(DIGITAL_SOURCE_TYPE, *pair)
        quote = b'"'
        # -4: the type is not counted; +2: the quotes. The CRC runs on from the head's, through the id.
        parts[pair] = (len(head) + len(tail) - 2, head + quote, zlib.crc32(quote, crc), quote + tail)
    for at, sample_id, generator, weights_digest in zip(starts, sample_ids, generators, weights, strict=True):
        size, head, crc, tail = parts[generator, weights_digest]
        text = sample_id.encode()
        chunk = pack(size + len(text)) + head + text + tail + pack(zlib.crc32(tail, zlib.crc32(text, crc)))
        if not data.startswith(chunk, at + _IHDR_END):
            return False
    return True


_IHDR_END = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature, then IHDR: length, type, 13 data bytes, CRC


def mark_png(png: bytes, m: Marking) -> bytes:
    """``png`` with ``m``'s chunk right after IHDR: the bytes Pillow writes when it saves the image with
    the chunk in a ``PngInfo`` (it puts an iTXt there when no ICC profile comes first), made without a
    second encode. ``png`` must carry no ICC profile, as an image made from an array does not."""
    if png[:16] != PNG_SIGNATURE + b"\0\0\0\rIHDR":
        raise ValueError("mark_png needs a PNG that starts with its IHDR chunk")
    return png[:_IHDR_END] + _chunk(m) + png[_IHDR_END:]


def _first_xmp_span(png: bytes | memoryview) -> tuple[int, int] | None:
    """(start, end) of the first XMP iTXt chunk before the image data, walking chunk headers only."""
    data = memoryview(png)
    key = XMP_KEYWORD.encode() + b"\0"
    for pos, kind, length in walk_chunks(data):
        if kind == b"IDAT":
            return None
        if kind == b"iTXt" and data[pos + 8 : pos + 8 + len(key)] == key:
            return pos, pos + 12 + length
    return None


def marking_problems(png: bytes | memoryview, expected: Marking) -> list[str]:
    """What is wrong with the marking of ``png`` against the record's ``expected`` one ([] if nothing)."""
    # Fast path for verify, which checks every image of a release: the marking is deterministic, so the
    # first XMP chunk is either byte for byte the one generation writes for this record, or it is parsed.
    # Generation puts it right after IHDR (offset 33), so that is looked at first.
    chunk = _chunk(expected)
    data = memoryview(png)
    if data[:16] == PNG_SIGNATURE + b"\0\0\0\rIHDR" and data[_IHDR_END : _IHDR_END + len(chunk)] == chunk:
        return []
    span = _first_xmp_span(png)
    if span is not None and data[span[0] : span[1]] == chunk:
        return []
    found = read_marking(png)
    if found is None:
        return ["carries no synthetic-media marking (no XMP DigitalSourceType in the PNG)"]
    problems = []
    if found.digital_source_type != DIGITAL_SOURCE_TYPE:
        problems.append(f"digital source type is {found.digital_source_type!r}, not trainedAlgorithmicMedia")
    for field, label in (
        ("sample_id", "sample id"),
        ("generator", "generator"),
        ("weights_digest", "weights"),
    ):
        got, want = getattr(found, field), getattr(expected, field)
        if got != want:
            problems.append(f"marking names {label} {got!r} but the record says {want!r}")
    return problems


def foreign_sample(png: bytes | memoryview, sample_id: str) -> str | None:
    """What is wrong when the marking of ``png`` names another sample than ``sample_id``, else None (also
    None for a PNG without a marking, which verify reports apart). Issue 24: an insider put one sample's
    image, marking and all, in another's row with its digest updated, and release signed it; the marking's
    sample id must be the row's wherever an image is checked against its row (``shards.check_members``)."""
    span = _first_xmp_span(png)
    needle = b" synthreg:sampleId=" + _quoteattr(sample_id).encode() + b" "
    if span is not None and needle in bytes(memoryview(png)[span[0] : span[1]]):
        return None  # as generation writes it: the one quick look verify can afford per image
    found = read_marking(png)
    if found is None or found.sample_id == sample_id:
        return None
    return f"its marking names sample {shown(found.sample_id)}, not {shown(sample_id)}"


def trace_marking(png: bytes, images: list[ImageMatch]) -> MarkingCheck:
    """What ``trace image`` adds: the file's marking and how it compares with the sample records the
    file matched (``images``: trace_image's, with sample_id, generator_name, weights_digest)."""
    found = read_marking(png)
    problems: list[str] = []
    if found is None:
        problems.append(
            "the file carries no synthetic-media marking (stripped, or made before synthreg marked)"
        )
    elif images:
        im = images[0]
        problems = marking_problems(png, Marking(im.sample_id, im.generator_name, im.weights_digest))
    elif found.digital_source_type != DIGITAL_SOURCE_TYPE:
        problems.append(f"digital source type is {found.digital_source_type!r}, not trainedAlgorithmicMedia")
    return MarkingCheck(
        found=None if found is None else found._asdict(), summary=describe(found), problems=problems
    )


def describe(m: Marking | None) -> str:
    if m is None:
        return "no synthetic-media marking"
    kind = (
        "trainedAlgorithmicMedia" if m.digital_source_type == DIGITAL_SOURCE_TYPE else m.digital_source_type
    )
    return f"marked {kind}: sample {m.sample_id}, generator {m.generator}, weights {m.weights_digest}"


__all__ = [
    "DIGITAL_SOURCE_TYPE",
    "XMP_KEYWORD",
    "Marking",
    "check_markable",
    "describe",
    "mark_png",
    "marking_problems",
    "read_marking",
    "trace_marking",
    "walk_chunks",
    "xmp_packet",
]
