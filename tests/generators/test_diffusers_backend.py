"""The diffusers backend on a tiny random-weight Stable Diffusion pipeline (offline, CPU, seconds)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import numpy as np
import pytest

from generators.backends import load_backend
from registry.core.errors import GeneratorError
from registry.records.dataset import GenerationRequest, GeneratorRef
from tests.generators.tiny_sd import save_tiny_sd_pipeline

SIZE = 32
STEPS = 2


def ref(path: str = "model", **kw) -> GeneratorRef:
    return GeneratorRef(name="tiny-sd", backend="diffusers", path=path, licence="CreativeML-OpenRAIL-M", **kw)


def request(
    index: int,
    seed: int,
    prompt: str = "a photo of a cat",
    guidance: float = 1.0,
    negative_prompt: str = "",
    size: int = SIZE,
    height: int | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        sample_id=f"s{index:04d}",
        index=index,
        identity="cat",
        attributes={},
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=STEPS,
        guidance=guidance,
        width=size,
        height=size if height is None else height,
    )


@pytest.fixture(scope="session")
def saved_pipeline(tmp_path_factory) -> Path:
    """Built once per session; each test copies it into its own workspace."""
    return save_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd") / "model")


@pytest.fixture
def ws(tmp_path, saved_pipeline) -> Path:
    """A workspace holding the tiny pipeline at ``model``."""
    shutil.copytree(saved_pipeline, tmp_path / "model")
    return tmp_path


@pytest.fixture
def backend(ws):
    return load_backend(ref(), ws=ws)


def test_spec_names_what_ran(backend):
    spec = backend.spec
    assert spec.pipeline_class == "StableDiffusionPipeline"
    assert spec.scheduler == "DDIMScheduler" == type(backend.pipe.scheduler).__name__
    assert re.fullmatch(r"[0-9a-f]{64}", spec.weights_digest)
    assert re.fullmatch(r"[0-9a-f]{64}", spec.scheduler_config_digest)
    assert spec.scheduler_config["steps_offset"] == 1
    assert (spec.name, spec.backend, spec.source) == ("tiny-sd", "diffusers", "model")
    assert spec.licence == "CreativeML-OpenRAIL-M"
    assert backend.device == "cpu"


def test_weights_digest_names_the_weights_not_the_folder(ws, backend):
    shutil.copytree(ws / "model", ws / "copy")
    assert load_backend(ref("copy"), ws=ws).spec.weights_digest == backend.spec.weights_digest

    # Flip one byte of tensor data (the file's last byte; the safetensors header is at the start).
    weights = ws / "copy" / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))

    changed = load_backend(ref("copy"), ws=ws).spec.weights_digest
    assert re.fullmatch(r"[0-9a-f]{64}", changed)
    assert changed != backend.spec.weights_digest


def test_the_fixture_is_deterministic(tmp_path, backend):
    again = save_tiny_sd_pipeline(tmp_path / "again")
    assert load_backend(ref("again"), ws=tmp_path).spec.weights_digest == backend.spec.weights_digest
    assert again == tmp_path / "again"


def _check_images(images, n):
    assert len(images) == n
    for img in images:
        assert isinstance(img, np.ndarray)
        assert img.dtype == np.uint8
        assert img.shape == (SIZE, SIZE, 3)


def test_generate_without_guidance(backend):
    reqs = [request(0, seed=1), request(1, seed=2, prompt="a photo of a dog")]
    for r in reqs:
        backend.check(r)
    images = backend.generate(reqs)
    _check_images(images, 2)
    assert not np.array_equal(images[0], images[1])  # different seeds, different noise


def test_generate_with_guidance_and_negative_prompt(backend):
    reqs = [
        request(0, seed=1, guidance=2.0, negative_prompt="blurry, low quality"),
        request(1, seed=2, prompt="a photo of a dog", guidance=2.0, negative_prompt="blurry"),
    ]
    for r in reqs:
        backend.check(r)
    images = backend.generate(reqs)
    _check_images(images, 2)
    assert not np.array_equal(images[0], images[1])
    # Guidance changes the image made from the same seed and prompt.
    unguided = backend.generate([request(0, seed=1)])[0]
    assert not np.array_equal(images[0], unguided)


@pytest.mark.parametrize(
    "guidance, negative_prompt", [(1.0, ""), (2.0, "blurry, low quality")], ids=["g1", "g2-neg"]
)
def test_same_seed_same_image(backend, guidance, negative_prompt):
    a = request(0, seed=7, guidance=guidance, negative_prompt=negative_prompt)
    b = request(1, seed=8, prompt="a photo of a dog", guidance=guidance, negative_prompt=negative_prompt)

    pair = backend.generate([a, b])
    again = backend.generate([a, b])
    for x, y in zip(pair, again, strict=True):
        np.testing.assert_array_equal(x, y)

    # A sample's image does not depend on its batch-mates or its place in the batch.
    alone_a = backend.generate([a])[0]
    alone_b = backend.generate([b])[0]
    swapped = backend.generate([b, a])
    np.testing.assert_array_equal(alone_a, pair[0])
    np.testing.assert_array_equal(alone_b, pair[1])
    np.testing.assert_array_equal(swapped[0], pair[1])
    np.testing.assert_array_equal(swapped[1], pair[0])


@pytest.mark.parametrize("width, height", [(33, 33), (32, 31)])
def test_check_refuses_a_size_the_vae_cannot_make(backend, width, height):
    assert backend.vae_scale == 2  # two VAE blocks
    with pytest.raises(GeneratorError, match=f"{width}x{height}"):
        backend.check(request(0, seed=1, size=width, height=height))


def test_folder_without_model_index_is_refused(ws):
    (ws / "model" / "model_index.json").unlink()
    with pytest.raises(GeneratorError, match=r"model_index\.json"):
        load_backend(ref(), ws=ws)


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeneratorError, match=r"model_index\.json"):
        load_backend(ref("empty"), ws=tmp_path)


def test_pinned_digest(ws, backend):
    digest = backend.spec.weights_digest
    assert load_backend(ref(weights_digest=digest), ws=ws).spec.weights_digest == digest

    other = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(GeneratorError, match="pins") as e:
        load_backend(ref(weights_digest=other), ws=ws)
    assert other in str(e.value) and digest in str(e.value)
