import io
import tarfile

import pytest

from registry.store.shards import _plain_ustar, members_from_bytes


def make_tar(members: dict[str, bytes], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_hand_parser_agrees_with_tarfile_on_plain_shards():
    members = {f"digits-{i}.png": bytes([i]) * (i * 97 + 1) for i in range(20)} | {"empty.png": b""}
    data = make_tar(members)
    assert _plain_ustar(data) is not None  # the fast path was taken
    assert {k: bytes(v) for k, v in members_from_bytes(data).items()} == members


def test_unusual_tars_fall_back_to_tarfile():
    long_name = "x" * 150 + ".png"  # needs a PAX header: not plain ustar
    data = make_tar({long_name: b"abc", "b.png": b"def"}, fmt=tarfile.PAX_FORMAT)
    assert _plain_ustar(data) is None
    assert {k: bytes(v) for k, v in members_from_bytes(data).items()} == {long_name: b"abc", "b.png": b"def"}


def test_truncated_tar_is_an_error_not_a_short_answer():
    data = make_tar({"a.png": b"a" * 2000, "b.png": b"b" * 2000})
    with pytest.raises(tarfile.TarError):
        members_from_bytes(data[:1500])
