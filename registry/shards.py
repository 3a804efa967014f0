"""Reading images back out of tar shards, without unpacking them to loose files."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from registry.digests import sha256_bytes
from registry.errors import ManifestError


def read_members(path: Path) -> dict[str, bytes]:
    """Every regular member of shard ``path`` by name."""
    if not path.is_file():
        raise ManifestError(
            f"shard {path} is missing; restore it (`dvc pull` / `dvc checkout`) or regenerate"
        )
    try:
        with tarfile.open(path, "r:") as tar:
            out = {}
            for m in tar:
                if m.isfile():
                    f = tar.extractfile(m)
                    assert f is not None  # isfile() members always have a file object
                    out[m.name] = f.read()
            return out
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ManifestError(f"shard {path} is corrupted ({e}); restore it or regenerate it") from e


def iter_images(
    ws: Path, rows: list[tuple[str, str, str, str]], check: bool = True
) -> Iterator[tuple[str, bytes]]:
    """(sample_id, png bytes) for rows of (sample_id, shard, member, image_sha256), shard by shard.

    With ``check``, an image whose bytes do not match its recorded sha256 is an error naming the sample.
    """
    by_shard: dict[str, list[tuple[str, str, str]]] = {}
    for sample_id, shard, member, digest in rows:
        by_shard.setdefault(shard, []).append((sample_id, member, digest))
    for shard, items in by_shard.items():
        members = read_members(ws / shard)
        for sample_id, member, digest in items:
            data = members.get(member)
            if data is None:
                raise ManifestError(f"sample {sample_id}: member {member} is missing from shard {shard}")
            if check and sha256_bytes(data) != digest:
                raise ManifestError(
                    f"sample {sample_id}: image in shard {shard} does not match its recorded sha256 "
                    "(the shard is corrupted); restore or regenerate it"
                )
            yield sample_id, data
