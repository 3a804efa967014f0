"""Released shards follow the WebDataset convention: beside each image ``<key>.png`` the tar holds
``<key>.json`` (identity, attributes, decision, reason, seed, prompt, generator, weights digest) and
``<key>.cls`` (the identity's index in the recipe, as text), so a loader gets image and label from the
shard alone, without a join with the manifest (issue 12). The decision exists only after filtering, so
the sidecars are added when a version is released (``registry.releases.publish.assemble``), not at generation.

Deterministic: the same images and records give the same tar bytes, so a derived version still shares
an untouched shard with its parent byte for byte. ``<key>`` is the member name without ``.png``:
WebDataset splits a name at its first dot, so sample ids must hold none (synthreg's plan makes none).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _string
from typing import Any

from registry.store.shards import members_from_bytes, tar_bytes

SIDECAR_FIELDS = (
    "sample_id",
    "identity",
    "attributes",
    "decision",
    "reason",
    "seed",
    "prompt",
    "generator_name",
    "weights_digest",
)


def sidecar(row: dict[str, Any]) -> bytes:
    """The ``.json`` member for a manifest row (the fields above, keys sorted)."""
    return json.dumps({k: row[k] for k in SIDECAR_FIELDS}, sort_keys=True).encode()


def sidecars(columns: dict[str, list[Any]]) -> list[bytes]:
    """``sidecar(row)`` for every row of ``columns`` (each of ``SIDECAR_FIELDS`` -> its values, a map
    column's values as Arrow's ``to_pylist`` gives them: lists of (key, value) pairs, or None), built a
    column at a time (issue 22: verify compares every sidecar of a release; a ``json.dumps`` of each
    row's dict cost ~30 us). Each value is encoded as ``json.dumps`` encodes it inside the row's dict
    (same separators, ASCII escapes, keys sorted), so the bytes are ``sidecar``'s; a test holds them
    equal."""
    encoded = []
    for name in sorted(SIDECAR_FIELDS):
        known: dict[Any, str] = {}  # a value seen before (identities, decisions, attribute maps repeat)
        column = []
        for value in columns[name]:
            key = tuple(value) if type(value) is list else value
            text = known.get(key)
            if text is None:
                if type(value) is str:
                    text = _string(value)  # what json.dumps writes for a str, without its overhead
                elif type(value) is int:
                    text = int.__repr__(value)
                else:
                    text = json.dumps(dict(value) if type(value) is list else value, sort_keys=True)
                known[key] = text
            column.append(text)
        encoded.append(column)
    template = "{" + ", ".join(f"{json.dumps(name)}: %s" for name in sorted(SIDECAR_FIELDS)) + "}"
    return [(template % row).encode() for row in zip(*encoded, strict=True)]


def sidecar_members(member: str, row: dict[str, Any], classes: list[str]) -> list[tuple[str, bytes]]:
    """The ``<key>.json`` and ``<key>.cls`` members beside image ``member`` of manifest ``row`` (the
    class is the identity's index in ``classes``, -1 when absent): what release writes and verify expects."""
    key = member.removesuffix(".png")
    identity = row["identity"]
    cls = str(classes.index(identity)) if identity in classes else "-1"
    return [(f"{key}.json", sidecar(row)), (f"{key}.cls", cls.encode())]


def with_sidecars(data: bytes, rows: dict[str, dict[str, Any]], classes: list[str]) -> bytes:
    """The tar ``data`` rebuilt as: for each image the manifest names (``rows``: member -> row), in the
    tar's order, the image, its ``.json`` and its ``.cls``. Other members (earlier sidecars of a parent
    version's shard) are dropped, so adding sidecars twice gives the same bytes."""
    found = members_from_bytes(data)
    out: list[tuple[str, bytes]] = []
    for member, blob in found.items():
        row = rows.get(member)
        if row is None:
            continue
        out += [(member, bytes(blob)), *sidecar_members(member, row, classes)]
    return tar_bytes(out)
