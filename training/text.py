"""Frozen text vectors of item titles (and of free texts) from the serving encoder, cached.

The vectors come from the same exported ONNX encoder the workers serve (``inference.encoder``),
so a model trained on them places a new item exactly as serving will embed it. They are cached
under ``<data_dir>/cache/`` by the encoder version and the texts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from inference.encoder import TextEncoder
from inference.settings import InferenceSettings


def open_encoder(settings: InferenceSettings | None = None, threads: int | None = None) -> TextEncoder:
    """The serving encoder on CPU (exported once from the shipped MiniLM unless configured)."""
    from inference.recommender import encoder_dir

    settings = settings or InferenceSettings()
    return TextEncoder(encoder_dir(settings), device="cpu", threads=threads)


def encode_texts(
    encoder: TextEncoder,
    texts: Sequence[str],
    cache_dir: Path | None = None,
    *,
    desc: str | None = "encoding texts",
    chunk: int = 512,
) -> np.ndarray:
    """``encoder.encode(texts)`` with a progress bar, cached in ``cache_dir`` when given."""
    texts = list(texts)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(encoder.version.encode())
        for text in texts:
            digest.update(text.encode("utf-8") + b"\0")
        path = Path(cache_dir) / f"text-{digest.hexdigest()[:20]}.npy"
        if path.is_file():
            return np.load(path)
    parts = [
        encoder.encode(texts[lo : lo + chunk])
        for lo in tqdm(range(0, len(texts), chunk), desc=desc, leave=False, disable=desc is None)
    ]
    vectors = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
    return vectors
