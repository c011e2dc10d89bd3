"""inference/quantize.py: the int8 copy is a version of its own, checked against fp32, built once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from inference import quantize
from inference.encoder import TextEncoder, read_manifest
from inference.quantize import MIN_COSINE, QuantizationMismatch, ensure_precision, quantize_int8
from inference.recommender import encoder_dir
from inference.settings import InferenceSettings

TEXTS = ["red ceramic mug", "tent pegs, steel, set of 12", "", "wireless headphones " * 30]


def test_the_int8_copy_is_a_version_of_its_own_close_to_fp32(tiny_onnx_dir: Path, tiny_encoder: TextEncoder,
                                                             tmp_path: Path) -> None:
    out = quantize_int8(tiny_onnx_dir, tmp_path / "int8")
    fp32, int8 = read_manifest(tiny_onnx_dir), read_manifest(out)
    assert int8["version"] == fp32["version"] + "-int8" and int8["quantized_from"] == fp32["version"]
    assert int8["precision"] == "int8" and int8["dim"] == fp32["dim"]
    assert MIN_COSINE <= int8["int8_cosine"]["min"] <= int8["int8_cosine"]["mean"] <= 1.0
    assert (out / "model.onnx").stat().st_size < (tiny_onnx_dir / "model.onnx").stat().st_size

    encoder = TextEncoder(out, device="cpu", threads=1)
    assert (encoder.precision, encoder.version, tiny_encoder.precision) == ("int8", int8["version"], "fp32")
    vectors = encoder.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * tiny_encoder.encode(TEXTS), axis=1)
    assert cosines.min() >= MIN_COSINE
    assert not np.array_equal(vectors, tiny_encoder.encode(TEXTS)), "the weights really are quantized"


def test_a_copy_that_strays_from_fp32_is_refused_and_leaves_nothing(tiny_onnx_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quantize, "MIN_COSINE", 1.0 + 1e-6)
    with pytest.raises(QuantizationMismatch, match="serve this model in fp32"):
        quantize_int8(tiny_onnx_dir, tmp_path / "int8")
    assert list(tmp_path.iterdir()) == []


def test_only_fp32_exports_are_quantized(tiny_onnx_dir: Path, tmp_path: Path) -> None:
    once = quantize_int8(tiny_onnx_dir, tmp_path / "int8")
    with pytest.raises(ValueError, match="only fp32 exports"):
        quantize_int8(once, tmp_path / "twice")


def test_ensure_precision_quantizes_once_and_serves_int8_folders_as_they_are(
    tiny_onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = quantize.quantize_int8

    def counting(onnx_dir: Path, out_dir: Path) -> Path:
        calls.append(out_dir)
        return real(onnx_dir, out_dir)

    monkeypatch.setattr(quantize, "quantize_int8", counting)
    cache = tmp_path / "cache"
    assert ensure_precision(tiny_onnx_dir, "fp32", cache) == tiny_onnx_dir
    version = read_manifest(tiny_onnx_dir)["version"]
    first = ensure_precision(tiny_onnx_dir, "int8", cache)
    assert first == cache / f"{version}-int8" and calls == [first]
    assert ensure_precision(tiny_onnx_dir, "int8", cache) == first and len(calls) == 1
    assert ensure_precision(first, "int8", cache) == first and ensure_precision(first, "fp32", cache) == first
    with pytest.raises(ValueError, match="precision must be one of"):
        ensure_precision(tiny_onnx_dir, "fp16", cache)


def test_an_int8_copy_beside_the_folder_is_served_without_quantizing(
    tiny_onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the worker image, which has no onnx package to quantize with."""
    fp32 = tmp_path / "encoder"
    shutil.copytree(tiny_onnx_dir, fp32)
    beside = quantize_int8(fp32, tmp_path / "encoder-int8")

    def unavailable(onnx_dir: Path, out_dir: Path) -> Path:
        raise AssertionError("quantized again")

    monkeypatch.setattr(quantize, "quantize_int8", unavailable)
    assert ensure_precision(fp32, "int8", tmp_path / "cache") == beside
    # A folder beside it that is not an int8 copy of this version is not taken for one.
    shutil.rmtree(beside)
    shutil.copytree(tiny_onnx_dir, beside)
    with pytest.raises(AssertionError, match="quantized again"):
        ensure_precision(fp32, "int8", tmp_path / "cache")


def test_the_worker_serves_the_configured_encoder_at_int8(tiny_onnx_dir: Path, tmp_path: Path) -> None:
    settings = InferenceSettings(data_dir=tmp_path, encoder_onnx_dir=tiny_onnx_dir, encoder_precision="int8")
    served = encoder_dir(settings)
    assert served == tmp_path / "models" / (read_manifest(tiny_onnx_dir)["version"] + "-int8")
    assert encoder_dir(settings.model_copy(update={"encoder_precision": "fp32"})) == tiny_onnx_dir


def test_int8_on_cuda_is_refused_at_configuration() -> None:
    with pytest.raises(ValidationError, match="int8 is for the CPU provider"):
        InferenceSettings(encoder_precision="int8", encoder_device="cuda")
