"""inference/encoder.py: shapes, norms, batching invariance, errors, and the real MiniLM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from inference.encoder import EncoderNotAvailable, TextEncoder

REPO_ROOT = Path(__file__).resolve().parents[2]
CUDA_AVAILABLE = "CUDAExecutionProvider" in ort.get_available_providers()

TITLES = [
    "running shoes",
    "men's waterproof hiking boots with vibram sole, size 44",
    "",
    "usb-c cable",
    "ceramic teapot with bamboo handle and stainless steel infuser, 1.2 litre",
    "a",
    "kids' bicycle helmet",
    " ".join(["memory foam mattress topper"] * 70),
    "wireless mouse",
    "organic green tea, 100 bags",
]


def test_embeddings_are_unit_norm_float32(tiny_encoder: TextEncoder) -> None:
    vectors = tiny_encoder.encode(TITLES)
    assert vectors.shape == (len(TITLES), 64)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_batch_size_and_order_do_not_change_embeddings(
    tiny_onnx_dir: Path, tiny_encoder: TextEncoder
) -> None:
    reference = tiny_encoder.encode(TITLES)
    one_by_one = TextEncoder(tiny_onnx_dir, device="cpu", batch_size=1, threads=1)
    np.testing.assert_allclose(one_by_one.encode(TITLES), reference, atol=1e-5)
    permutation = np.random.default_rng(0).permutation(len(TITLES))
    shuffled = tiny_encoder.encode([TITLES[i] for i in permutation])
    np.testing.assert_allclose(shuffled, reference[permutation], atol=1e-5)
    # Batches smaller than the input, and a sort window that spans several batches.
    three = TextEncoder(tiny_onnx_dir, device="cpu", batch_size=3, threads=1)
    np.testing.assert_allclose(three.encode(TITLES * 40), np.tile(reference, (40, 1)), atol=1e-5)


def test_empty_list_and_empty_string(tiny_encoder: TextEncoder) -> None:
    empty = tiny_encoder.encode([])
    assert empty.shape == (0, 64) and empty.dtype == np.float32
    (vector,) = tiny_encoder.encode([""])
    assert np.isfinite(vector).all()
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-6


def test_input_may_be_any_sequence(tiny_encoder: TextEncoder) -> None:
    np.testing.assert_array_equal(
        tiny_encoder.encode(tuple(TITLES[:3])), tiny_encoder.encode(TITLES[:3])
    )


def test_single_string_is_rejected(tiny_encoder: TextEncoder) -> None:
    with pytest.raises(TypeError, match="wrap a single text in a list"):
        tiny_encoder.encode("running shoes")


def test_max_length_truncates(tiny_onnx_dir: Path, tiny_encoder: TextEncoder) -> None:
    short = TextEncoder(tiny_onnx_dir, device="cpu", max_length=8, threads=1)
    assert short.max_length == 8
    # [CLS] + 6 word pieces + [SEP] = 8 tokens.
    np.testing.assert_allclose(
        short.encode(["red green blue white black pink grey brown"]),
        tiny_encoder.encode(["red green blue white black pink"]),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="between 1 and 256"):
        TextEncoder(tiny_onnx_dir, device="cpu", max_length=257)


def test_properties_come_from_manifest_and_session(
    tiny_onnx_dir: Path, tiny_encoder: TextEncoder
) -> None:
    manifest = json.loads((tiny_onnx_dir / "manifest.json").read_text())
    assert tiny_encoder.dim == 64
    assert tiny_encoder.version == manifest["version"]
    assert tiny_encoder.max_length == manifest["max_length"] == 256
    assert tiny_encoder.providers == ["CPUExecutionProvider"]
    assert tiny_encoder.version in repr(tiny_encoder)


@pytest.mark.skipif(CUDA_AVAILABLE, reason="CUDA is available: 'auto' picks it")
def test_auto_device_falls_back_to_cpu(tiny_onnx_dir: Path) -> None:
    encoder = TextEncoder(tiny_onnx_dir, threads=1)
    assert encoder.providers == ["CPUExecutionProvider"]


@pytest.mark.skipif(CUDA_AVAILABLE, reason="CUDA is available on this machine")
def test_cuda_device_raises_without_cuda(tiny_onnx_dir: Path) -> None:
    with pytest.raises(EncoderNotAvailable, match="device='cuda'.*CUDAExecutionProvider"):
        TextEncoder(tiny_onnx_dir, device="cuda")


def test_bad_arguments_are_rejected(tiny_onnx_dir: Path) -> None:
    with pytest.raises(ValueError, match="device must be one of"):
        TextEncoder(tiny_onnx_dir, device="gpu")
    with pytest.raises(ValueError, match="batch_size"):
        TextEncoder(tiny_onnx_dir, batch_size=0)
    with pytest.raises(ValueError, match="threads"):
        TextEncoder(tiny_onnx_dir, threads=0)


def test_non_model_folder_raises_clear_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(EncoderNotAvailable, match="not an exported encoder folder: manifest.json is missing"):
        TextEncoder(tmp_path)
    # A Hugging Face folder is not an export either: the message says how to make one.
    with pytest.raises(EncoderNotAvailable, match="ensure_exported"):
        TextEncoder(tiny_model_dir)


def test_incomplete_export_raises_clear_error(tmp_path: Path, tiny_onnx_dir: Path) -> None:
    broken = shutil.copytree(tiny_onnx_dir, tmp_path / "broken")
    (broken / "model.onnx").unlink()
    with pytest.raises(EncoderNotAvailable, match="model.onnx named in manifest.json is missing"):
        TextEncoder(broken)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(EncoderNotAvailable, match="unreadable"):
        TextEncoder(broken)


def test_runtime_never_imports_torch() -> None:
    code = "import sys, inference.encoder; assert not {'torch', 'transformers', 'onnx'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.pretrained
def test_pretrained_minilm_is_semantically_sane(pretrained_onnx_dir: Path) -> None:
    manifest = json.loads((pretrained_onnx_dir / "manifest.json").read_text())
    assert manifest["dim"] == 384
    assert manifest["max_abs_diff"] <= 1e-4
    encoder = TextEncoder(pretrained_onnx_dir, device="cpu", threads=1)
    assert encoder.dim == 384
    query, near, far = encoder.encode(["running shoes", "trail running sneakers", "ceramic teapot"])
    assert float(query @ near) > float(query @ far) + 0.2
    np.testing.assert_allclose(np.linalg.norm([query, near, far], axis=1), 1.0, atol=1e-6)
