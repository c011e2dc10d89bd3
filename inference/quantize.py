"""int8 copies of exported encoders: onnxruntime dynamic quantisation, checked against fp32.

On this 2-core CPU the int8 graph embeds 2.3-9.3x as fast as torch eager and 2.0-2.8x as fast
as fp32 onnxruntime (bench/reports/perf-20261130c), at a cosine of ~0.99 to the fp32 vectors. A quantized folder is a
model version of its own (`<version>-int8`), so its vectors never share a collection with fp32
ones and announce, swap and rollback treat it like any other version. Quantizing needs the onnx
package (the `train` extra); serving a folder quantized already needs only onnxruntime.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from inference.event_encoder import tower_folder
from inference.encoder import (
    MANIFEST_FILE,
    MODEL_FILE,
    EncoderNotAvailable,
    TextEncoder,
    precision_of,
    read_manifest,
)
from inference.export import SAMPLE_SENTENCES, build_once, staged_folder

PRECISIONS = ("fp32", "int8")
INT8_SUFFIX = "-int8"
# Below this cosine on any check text the quantised model is refused: a collapsed layer shows
# up as a cosine far below the ~0.99 that per-channel int8 gives on MiniLM.
MIN_COSINE = 0.97
CHECK_TEXTS = (
    *SAMPLE_SENTENCES,
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "SET OF 3 CAKE TINS PANTRY DESIGN",
    "organic cotton crew-neck t-shirt, navy, slim fit",
    "4K ultra HD smart TV with HDR and voice remote",
    "vitamin C brightening serum for dull skin",
)


class QuantizationMismatch(RuntimeError):
    """The int8 model's vectors stray too far from the fp32 model's; the copy is discarded."""


def _quantizer_chatter(record: logging.LogRecord) -> bool:
    """onnxruntime's quantiser logs to the root logger (this filter sits on it, so it sees only
    those records): one INFO line per tensor, and advice to run shape pre-processing (meant for
    static, calibrated quantisation). Keep only its warnings that say something about this graph."""
    return record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage()


def _cosines(fp32_dir: Path, int8_dir: Path) -> np.ndarray:
    texts = list(CHECK_TEXTS)
    fp32 = TextEncoder(fp32_dir, device="cpu", threads=1).encode(texts)
    int8 = TextEncoder(int8_dir, device="cpu", threads=1).encode(texts)
    return np.sum(fp32 * int8, axis=1)  # rows are unit length


def quantize_int8(onnx_dir: Path, out_dir: Path) -> Path:
    """Write an int8 (dynamic, per-channel weights) copy of the fp32 export `onnx_dir` to `out_dir`.

    The copy is refused (QuantizationMismatch) when any check text's vector has a cosine below
    MIN_COSINE to the fp32 one. Written to a temporary sibling first, like an export.
    """
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    manifest = read_manifest(onnx_dir)
    if precision_of(manifest) != "fp32":
        raise ValueError(f"{onnx_dir} holds a {precision_of(manifest)} model; only fp32 exports are quantized")
    try:
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise EncoderNotAvailable(
            f"quantizing {onnx_dir} to int8 needs the onnx package: pip install 'streamrec[train]', or point "
            "STREAMREC_ENCODER_ONNX_DIR at a folder quantized already (`streamrec export` with "
            "STREAMREC_ENCODER_PRECISION=int8 prints one)"
        ) from exc

    with staged_folder(out_dir) as tmp_dir:
        # The fused graph's contrib ops (Attention, SkipLayerNormalization) escape ONNX shape
        # inference, so the quantiser is told their outputs are float32.
        root = logging.getLogger()
        root.addFilter(_quantizer_chatter)
        try:
            quantize_dynamic(str(onnx_dir / manifest["model"]), str(tmp_dir / MODEL_FILE),
                             per_channel=True, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": TensorProto.FLOAT})
        finally:
            root.removeFilter(_quantizer_chatter)
        shutil.copyfile(onnx_dir / manifest["tokenizer"], tmp_dir / manifest["tokenizer"])
        if tower_folder(onnx_dir).is_dir():  # the event encoder travels with its text encoder
            shutil.copytree(tower_folder(onnx_dir), tower_folder(tmp_dir))
        quantized = {
            **manifest,
            "version": f"{manifest['version']}{INT8_SUFFIX}",
            "model": MODEL_FILE,
            "precision": "int8",
            "quantized_from": manifest["version"],
            "quantization": {"method": "dynamic", "weights": "int8", "per_channel": True},
        }
        (tmp_dir / MANIFEST_FILE).write_text(json.dumps(quantized, indent=2) + "\n")
        cosines = _cosines(onnx_dir, tmp_dir)
        if not float(cosines.min()) >= MIN_COSINE:
            worst = int(np.argmin(cosines))
            raise QuantizationMismatch(
                f"int8 copy of {onnx_dir} embeds {CHECK_TEXTS[worst][:60]!r} at cosine {cosines[worst]:.4f} "
                f"to fp32 (< {MIN_COSINE}); serve this model in fp32"
            )
        quantized["int8_cosine"] = {"min": round(float(cosines.min()), 6), "mean": round(float(cosines.mean()), 6)}
        (tmp_dir / MANIFEST_FILE).write_text(json.dumps(quantized, indent=2) + "\n")
    return out_dir


def _int8_of(version: str):
    def current(folder: Path) -> bool:
        try:
            manifest = read_manifest(folder)
        except EncoderNotAvailable:
            return False
        return precision_of(manifest) == "int8" and manifest.get("quantized_from") == version

    return current


def ensure_precision(onnx_dir: Path, precision: str, cache_root: Path) -> Path:
    """The folder to serve `onnx_dir` at `precision`: itself for fp32; for int8, its copy beside
    it (`<folder>-int8`, as `streamrec train` and the container images write one), else one under
    `cache_root/<version>-int8`, quantized once. A folder quantized already is served as it is."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    onnx_dir = Path(onnx_dir)
    manifest = read_manifest(onnx_dir)
    if precision == "fp32" or precision_of(manifest) == "int8":
        return onnx_dir
    version = str(manifest["version"])
    current = _int8_of(version)
    beside = onnx_dir.with_name(onnx_dir.name + INT8_SUFFIX)
    if current(beside):
        return beside
    return build_once(Path(cache_root) / f"{version}{INT8_SUFFIX}", current,
                      lambda target: quantize_int8(onnx_dir, target))
