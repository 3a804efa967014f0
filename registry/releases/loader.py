"""Reading a released version: records and images straight from its tar shards, never unpacked.

    reader = open_release(ws, "digits@1.0.0")             # accepted images only
    for record, image in reader: ...                       # dict of manifest columns, PIL image
    ds = reader.torch_dataset()                            # (tensor CxHxW in [0, 1], label) pairs

Each shard's member offsets are read once from its tar headers; an image is then one seek and one
read, so a torch DataLoader can fetch samples in any order (each worker opens its own file handles).

Nothing is served before ``admit`` passes (signatures against the pinned trust root, thresholds met,
statement bound to the version and tag, not withdrawn) and the manifest matches its signed sha256; each
shard is hashed against its signed sha256 when it is first opened.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from registry.core.digests import sha256_bytes, sha256_file
from registry.core.errors import ManifestError, ReleaseError
from registry.core.names import check_manifest, shown
from registry.records.lineage import WithdrawalState
from registry.records.release import Release
from registry.store import manifest as mf
from registry.store.releases import load_release, parse_ref, release_folder
from registry.store.shards import ShardFormatError, index
from registry.trust.admission import admission
from registry.trust.approvals import require_untrusted_free
from registry.trust.root import load_trust


def admit(
    ws: Path, ref: str, allow_withdrawn: bool = False, trust: Path | str | None = None
) -> tuple[Release, dict[str, str], WithdrawalState | None]:
    """Whether ``ref`` may be read, before a single image is served (``registry.trust.admission``): its
    signatures trusted by the pinned trust root and meeting the thresholds (final, not a candidate), the
    signed statement naming this version, the tag on a commit holding this record, and no withdrawal
    unless ``allow_withdrawn``. Returns the record, the signed subjects (path -> sha256) and the
    withdrawal (or None)."""
    record = load_release(ws, ref)
    name, version = record.name, record.version
    asked_name, asked_version = parse_ref(ref)
    if asked_name != name or asked_version not in (None, version):
        raise ReleaseError(f"{ref} resolved to {name}@{version}; refusing to serve another version")
    at = f"{name}@{version}"
    a = admission(ws, name, version, lambda: load_trust(ws, trust, strict=False))
    require_untrusted_free(a.approval)
    # The loader compares the signed record with the record as loaded (its model), as it always has;
    # verify and `list` compare it with the file (Admission.record_matches).
    if a.statement.get("predicate") != record.model_dump(mode="json"):
        raise ReleaseError(f"{at}: release.json differs from the signed record; run `synthreg verify {at}`")
    problems = a.approval.problems + a.binding
    if problems:
        raise ReleaseError(f"{at} cannot be read: {problems[0]}; run `synthreg verify {at}`")
    if not a.approval.met:
        raise ReleaseError(
            f"{at} is a candidate, not a final release ({a.approval.summary()}); it is read only once "
            f"approved: `synthreg approve {at}`"
        )
    withdrawn = a.withdrawal
    if withdrawn and not allow_withdrawn:
        raise ReleaseError(
            f"{at} was withdrawn on {withdrawn.day} by {withdrawn.actor}: {withdrawn.reason}; "
            "pass allow_withdrawn=True (`--allow-withdrawn`) to use it anyway (recorded in MLflow and the "
            "audit log)"
        )
    return record, a.subjects, withdrawn


class ReleaseReader:
    def __init__(
        self,
        ws: Path,
        ref: str,
        accepted_only: bool = True,
        check_digests: bool = True,
        allow_withdrawn: bool = False,
        trust: Path | str | None = None,
    ) -> None:
        self.release, subjects, self.withdrawn = admit(ws, ref, allow_withdrawn, trust)
        folder = release_folder(ws, self.release.name, self.release.version, "data")
        manifest = folder / "manifest.parquet"
        if not manifest.is_file():
            raise ReleaseError(f"{manifest} is missing; run `dvc checkout` (or `dvc pull`) to restore it")
        signed = subjects.get(f"{self.release.manifest_path}")
        if sha256_file(manifest) != signed:  # before a single row is read
            raise ManifestError(
                f"{manifest} does not match the sha256 in the signed record of "
                f"{self.release.name}@{self.release.version} (edited after release?); run `synthreg verify`"
            )
        self._signed = {s.source: subjects.get(f"data/{s.path}") for s in self.release.shards}
        where = "WHERE decision = 'accepted'" if accepted_only else ""
        con = mf.connect(manifest)
        check_manifest(con, f"manifest of {self.release.name}@{self.release.version}")
        self.table = con.sql(f"SELECT * FROM manifest {where} ORDER BY index").to_arrow_table()
        self.files = {s.source: folder / s.path for s in self.release.shards}
        self.check_digests = check_digests
        cols = self.table.select(["sample_id", "shard", "member", "image_sha256"]).to_pydict()
        self._rows = list(
            zip(cols["sample_id"], cols["shard"], cols["member"], cols["image_sha256"], strict=True)
        )
        self.identities = sorted(set(self.table["identity"].to_pylist()))
        self._offsets: dict[str, dict[str, tuple[int, int]]] = {}
        # Every member a shard may hold: each row's image (rejected rows' too) and its WebDataset sidecars.
        self._listed: dict[str, set[str]] = {}
        for shard, member in con.sql("SELECT shard, member FROM manifest").fetchall():
            key = member.removesuffix(".png")
            self._listed.setdefault(shard, set()).update((member, f"{key}.json", f"{key}.cls"))

    def __len__(self) -> int:
        return len(self._rows)

    def _index(self, shard: str) -> dict[str, tuple[int, int]]:
        """member -> (offset of its data, size), from the shard's tar headers (read once)."""
        if shard not in self._offsets:
            path = self.files.get(shard)
            if path is None or not path.is_file():
                raise ManifestError(
                    f"shard {shard} of {self.release.name}@{self.release.version} is missing; "
                    "run `dvc checkout`"
                )
            data = path.read_bytes()
            if self._signed.get(shard) != sha256_bytes(data):  # once per shard, before any image of it
                raise ManifestError(
                    f"shard {shard} of {self.release.name}@{self.release.version} does not match its "
                    f"signed sha256; run `synthreg verify {self.release.name}@{self.release.version}`"
                )
            try:
                offsets = index(data)
            except ShardFormatError as e:  # signed, yet not a shard synthreg writes: verify names it too
                raise ManifestError(
                    f"shard {shard} of {self.release.name}@{self.release.version} is not a plain tar of "
                    f"images ({e}); run `synthreg verify {self.release.name}@{self.release.version}`"
                ) from e
            # Signed, yet holding a member no row names (issue 24): a WebDataset reader of the same shard
            # would yield a sample this loader never shows. verify names it; the loader refuses it too.
            listed = self._listed.get(shard, set())
            unlisted = sorted(m for m in offsets if m not in listed)
            if unlisted:
                raise ManifestError(
                    f"shard {shard} of {self.release.name}@{self.release.version} holds {len(unlisted)} "
                    f"member(s) no manifest row names, first {shown(unlisted[0])}; run `synthreg verify "
                    f"{self.release.name}@{self.release.version}`"
                )
            self._offsets[shard] = offsets
        return self._offsets[shard]

    def image_bytes(self, i: int) -> bytes:
        sample_id, shard, member, digest = self._rows[i]
        offset, size = self._index(shard).get(member, (-1, 0))
        if offset < 0:
            raise ManifestError(f"sample {sample_id}: member {member} is missing from its shard")
        with open(self.files[shard], "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if self.check_digests and sha256_bytes(data) != digest:
            raise ManifestError(
                f"sample {sample_id}: image does not match its recorded sha256; "
                f"run `synthreg verify {self.release.name}@{self.release.version}`"
            )
        return data

    def record(self, i: int) -> dict[str, Any]:
        row = self.table.slice(i, 1).to_pylist()[0]
        for k in ("attributes", "library_versions", "observed_attributes"):
            if row.get(k) is not None:
                row[k] = dict(row[k])
        return row

    def image(self, i: int):
        from registry.core.images import decode

        return decode(self.image_bytes(i), f"image {i} of {self.release.name}@{self.release.version}")

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Any]]:
        for i in range(len(self)):
            yield self.record(i), self.image(i)

    def torch_dataset(self, transform=None):
        """A map-style torch Dataset of (image tensor, identity index); ``.classes`` maps index -> identity.

        Without ``transform`` an image becomes a float tensor (C, H, W) in [0, 1].
        """
        import numpy as np
        import torch

        reader = self
        labels = [self.identities.index(i) for i in self.table["identity"].to_pylist()]

        class ReleaseDataset(torch.utils.data.Dataset):
            classes = reader.identities

            def __len__(self) -> int:
                return len(reader)

            def __getitem__(self, i: int):
                img = reader.image(i)
                if transform is not None:
                    return transform(img), labels[i]
                arr = np.asarray(img, dtype=np.float32) / 255.0
                x = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
                return x, labels[i]

        return ReleaseDataset()


def open_release(
    ws: Path,
    ref: str,
    accepted_only: bool = True,
    check_digests: bool = True,
    allow_withdrawn: bool = False,
    trust: Path | str | None = None,
) -> ReleaseReader:
    """A reader of a final, trusted, not withdrawn release (see ``admit``). ``ws`` may be relative
    (``Path(".")``): it is resolved here, once."""
    return ReleaseReader(Path(ws).resolve(), ref, accepted_only, check_digests, allow_withdrawn, trust)
