from pathlib import Path

import numpy as np
import pytest

from generators.backends import load_backend
from generators.shard import encode_png
from registry.core.digests import sha256_bytes
from registry.core.errors import GeneratorError
from registry.records.dataset import GenerationRequest, GeneratorRef
from tests.conftest import REPO

# Golden values from the committed weights (diffusers' expected_slice pattern). If the weights are
# retrained on purpose, update them together with the model card.
WEIGHTS = "58ca88a3eea0d21692b89f428dba1fdc2d7ad7306bb68d0ede4357890661f6d8"
EXPECTED_PNG_SHA256 = "eddeabfac994abbf55fd99668c6d21a6f5ee255f389b0f218968d90322f52b8c"
EXPECTED_ROW_SLICE = [31, 82, 156, 210, 234, 204, 121, 60]  # image[8, 4:12]


@pytest.fixture(scope="module")
def backend():
    ref = GeneratorRef(
        name="tiny-digits", backend="tiny-digits", path="generators/tiny_digits/model", licence="CC-BY-4.0"
    )
    return load_backend(ref, REPO)


def req(seed: int = 0, identity: str = "3", stroke: str = "bold", **kw) -> GenerationRequest:
    fields = dict(
        sample_id=f"s{seed}",
        index=0,
        identity=identity,
        attributes={"stroke": stroke},
        prompt="",
        negative_prompt="",
        seed=seed,
        steps=10,
        guidance=2.0,
        width=16,
        height=16,
    )
    return GenerationRequest(**(fields | kw))


def test_spec_records_what_ran(backend):
    spec = backend.spec
    assert spec.weights_digest == WEIGHTS
    assert spec.scheduler == "DDIMScheduler"
    assert spec.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"


def test_fixed_seed_gives_the_expected_image(backend):
    (image,) = backend.generate([req()])
    assert image.shape == (16, 16) and image.dtype == np.uint8
    assert image[8, 4:12].tolist() == EXPECTED_ROW_SLICE
    assert sha256_bytes(encode_png(image)) == EXPECTED_PNG_SHA256


def test_image_does_not_depend_on_batch_mates(backend):
    alone = backend.generate([req(seed=5)])[0]
    batched = backend.generate([req(seed=1), req(seed=5, identity="8"), req(seed=5)])
    assert np.array_equal(alone, batched[2])
    assert not np.array_equal(batched[1], batched[2])


def test_unknown_identity_attribute_or_size_is_refused(backend):
    with pytest.raises(GeneratorError, match=r"identity '11' is not known to generator tiny-digits"):
        backend.check(req(identity="11"))
    with pytest.raises(GeneratorError, match=r"stroke in \['thin', 'bold'\]"):
        backend.check(req(stroke="italic"))
    with pytest.raises(GeneratorError, match="set the recipe's size to 16"):
        backend.check(req(width=32, height=32))


def test_unreadable_or_wrong_weights_are_refused(tmp_path: Path):
    import shutil

    shutil.copytree(REPO / "generators/tiny_digits/model", tmp_path / "m")
    ref = GeneratorRef(name="t", backend="tiny-digits", path="m", licence="CC-BY-4.0", weights_digest=WEIGHTS)
    weights = tmp_path / "m/unet/diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"garbage")
    with pytest.raises(GeneratorError, match="cannot load tiny-digits weights"):
        load_backend(ref, tmp_path)
    with pytest.raises(GeneratorError, match="generator folder nope does not exist"):
        load_backend(ref.model_copy(update={"path": "nope"}), tmp_path)
