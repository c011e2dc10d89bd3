"""Text encoder runtime: an onnxruntime session over a folder written by `inference.export`.

Imports only numpy, onnxruntime and tokenizers, so serving never loads torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embedding"
DEVICES = ("auto", "cpu", "cuda")

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_MANIFEST_KEYS = ("version", "dim", "max_length", "tokenizer", "model")
# Tokenizing a bounded slice at a time keeps memory flat for very large inputs while still
# sorting enough texts together to make batches of similar length.
_SORT_WINDOW_BATCHES = 32


class EncoderNotAvailable(RuntimeError):
    """The encoder cannot be loaded: missing weights, not an exported folder, or no such device."""


def load_tokenizer(path: Path, max_length: int) -> tuple[Tokenizer, int]:
    """Load a fast tokenizer that truncates to `max_length`, and its padding id.

    tokenizer.json files often carry a fixed padding length (MiniLM's pads to 128); padding is
    switched off here so each batch is padded only to its own longest text (see `pad_batch`).
    """
    tokenizer = Tokenizer.from_file(str(path))
    padding = tokenizer.padding
    if padding is not None:
        pad_id = int(padding["pad_id"])
    else:
        pad_id = next(
            (i for i in map(tokenizer.token_to_id, ("[PAD]", "<pad>")) if i is not None), 0
        )
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer, pad_id


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to the longest one: (input_ids, attention_mask), both int64."""
    width = max((len(row) for row in ids), default=0)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def read_manifest(onnx_dir: Path) -> dict[str, Any]:
    """Read and check an exported folder's manifest, raising EncoderNotAvailable if it is not one."""
    onnx_dir = Path(onnx_dir)
    hint = "create one with inference.export.ensure_exported(model_dir, cache_root)"
    manifest_path = onnx_dir / MANIFEST_FILE
    if not manifest_path.is_file():
        raise EncoderNotAvailable(
            f"{onnx_dir} is not an exported encoder folder: {MANIFEST_FILE} is missing; {hint}"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise EncoderNotAvailable(f"{manifest_path} is unreadable ({exc}); {hint}") from exc
    if not isinstance(manifest, dict):
        raise EncoderNotAvailable(f"{manifest_path} is not a JSON object; {hint}")
    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if missing:
        raise EncoderNotAvailable(f"{manifest_path} lacks {', '.join(missing)}; {hint}")
    for key in ("model", "tokenizer"):
        if not (onnx_dir / manifest[key]).is_file():
            raise EncoderNotAvailable(
                f"{onnx_dir} is incomplete: {manifest[key]} named in {MANIFEST_FILE} is missing; {hint}"
            )
    return manifest


def precision_of(manifest: dict[str, Any]) -> str:
    """The weights' precision: fp32, or int8 (`inference.quantize`); older manifests say nothing: fp32."""
    return str(manifest.get("precision", "fp32"))


def _providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return [_CPU]
    if device == "cuda":
        if _CUDA not in available:
            raise EncoderNotAvailable(
                f"device='cuda' needs onnxruntime's {_CUDA}, but this onnxruntime offers only "
                f"{available}; install streamrec[gpu] (onnxruntime-gpu, never beside onnxruntime) "
                "on a machine with CUDA, or use device='cpu'"
            )
        return [_CUDA, _CPU]
    return [_CUDA, _CPU] if _CUDA in available else [_CPU]


class TextEncoder:
    """Turns texts into L2-normalised float32 embeddings with the exported ONNX model.

    Pooling and normalisation live inside the graph, so these vectors equal the torch model's.
    """

    def __init__(
        self,
        onnx_dir: Path,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        threads: int | None = None,
    ) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 or None (onnxruntime decides), not {threads}")
        onnx_dir = Path(onnx_dir)
        manifest = read_manifest(onnx_dir)
        exported_max = int(manifest["max_length"])
        if max_length is None:
            max_length = exported_max
        elif not 1 <= max_length <= exported_max:
            raise ValueError(
                f"max_length must be between 1 and {exported_max} (the exported limit), not {max_length}"
            )

        self._manifest = manifest
        self._batch_size = batch_size
        self._max_length = max_length
        self._tokenizer, self._pad_id = load_tokenizer(onnx_dir / manifest["tokenizer"], max_length)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(
                str(onnx_dir / manifest["model"]), sess_options=options, providers=_providers_for(device)
            )
        except EncoderNotAvailable:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise EncoderNotAvailable(f"onnxruntime cannot load {onnx_dir / manifest['model']}: {exc}") from exc
        # onnxruntime-gpu logs a failed CUDA start and silently runs on CPU; only the session knows.
        if device == "cuda" and _CUDA not in self._session.get_providers():
            raise EncoderNotAvailable(
                f"device='cuda' was requested but onnxruntime fell back to {self._session.get_providers()}; "
                "check the CUDA and cuDNN libraries onnxruntime-gpu needs (its log says which failed)"
            )

        inputs = [i.name for i in self._session.get_inputs()]
        outputs = self._session.get_outputs()
        if tuple(inputs) != INPUT_NAMES or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise EncoderNotAvailable(
                f"{onnx_dir / manifest['model']} has inputs {inputs} and outputs {[o.name for o in outputs]}; "
                f"expected {list(INPUT_NAMES)} -> [{OUTPUT_NAME!r}] as written by inference.export"
            )
        graph_dim = outputs[0].shape[-1]
        if isinstance(graph_dim, int) and graph_dim != int(manifest["dim"]):
            raise EncoderNotAvailable(
                f"{onnx_dir}: the graph outputs dimension {graph_dim} but the manifest says {manifest['dim']}"
            )

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def version(self) -> str:
        """Identifies the weights; store it beside vectors so mixed model versions are never compared."""
        return str(self._manifest["version"])

    @property
    def precision(self) -> str:
        """fp32, or int8 for a copy written by `inference.quantize`."""
        return precision_of(self._manifest)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses (not merely those installed)."""
        return list(self._session.get_providers())

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` in order as a float32 array of shape (len(texts), dim), rows of unit norm.

        Texts are sorted by token count before batching so short texts are not padded to the
        length of a long neighbour; the output follows the input order.
        """
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of strings; wrap a single text in a list")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        window = self._batch_size * _SORT_WINDOW_BATCHES
        for start in range(0, len(texts), window):
            chunk = texts[start : start + window]
            ids = [encoding.ids for encoding in self._tokenizer.encode_batch(chunk)]
            order = np.argsort([len(row) for row in ids], kind="stable")
            for b in range(0, len(order), self._batch_size):
                rows = order[b : b + self._batch_size]
                input_ids, attention_mask = pad_batch([ids[i] for i in rows], self._pad_id)
                (embedding,) = self._session.run(
                    [OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask}
                )
                out[start + rows] = embedding
        return out

    def __repr__(self) -> str:
        return (f"TextEncoder(version={self.version!r}, dim={self.dim}, precision={self.precision!r}, "
                f"providers={self.providers})")
