"""Encoder throughput: torch eager vs onnxruntime fp32 (our TextEncoder) vs onnxruntime int8.

Same model folder (the shipped all-MiniLM-L6-v2 unless STREAMREC_ENCODER_MODEL_DIR says
otherwise), same fast tokenizer, same per-batch padding and length sorting, 2 threads each:

- torch eager (the baseline): transformers AutoModel (default attention implementation) + mean
  pooling + L2 normalisation, under torch.inference_mode;
- onnxruntime fp32: inference.encoder.TextEncoder over the exported folder (the product);
- onnxruntime int8: what STREAMREC_ENCODER_PRECISION=int8 serves (inference.quantize: dynamic
  quantisation, per-channel int8 weights, checked against fp32), loaded by the same TextEncoder;
  its cosine to the fp32 vectors is reported.

Batch sizes 1, 16, 64; short texts (Online Retail product titles, ~10 tokens) and long texts
(~120 tokens: product copy assembled from those titles). The tokenizer alone is printed as the
ceiling. Items/s are the median of the repetitions with the spread (min–max).

Usage: python -m bench.encoder [--batch-sizes 1,16,64] [--short-texts 256] [--long-texts 64]
                               [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import MIN_REPEATS, footer, header, median, mib, note, ratio, rss_bytes, spread, table
from inference.encoder import MANIFEST_FILE, MODEL_FILE, TextEncoder, load_tokenizer, pad_batch
from inference.quantize import ensure_precision
from inference.recommender import encoder_dir
from inference.settings import InferenceSettings

LONG_TOKENS = 120
_FILLERS = (
    "Made from durable materials and finished by hand, it suits the kitchen, the living room or "
    "the garden, and makes a thoughtful gift for birthdays, weddings and Christmas.",
    "Each piece is carefully packed; colours may vary slightly from the photograph. Wipe clean "
    "with a damp cloth and keep away from open flames and direct sunlight.",
)


def short_texts(n: int, seed: int) -> list[str]:
    """Real product titles from the Online Retail catalog."""
    from training.datasets import default_online_retail_path, load_online_retail

    titles = load_online_retail(default_online_retail_path()).items.title.dropna().astype(str).unique()
    rng = np.random.default_rng(seed)
    return [str(t) for t in rng.choice(titles, size=n, replace=n > len(titles))]


def long_texts(titles: Sequence[str], n: int, tokenizer, seed: int) -> list[str]:
    """~LONG_TOKENS-token product descriptions: several titles and shop copy, cut at that length."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(n):
        parts: list[str] = []
        while True:
            parts.append(str(rng.choice(titles)).capitalize() + ".")
            parts.append(str(rng.choice(_FILLERS)))
            text = " ".join(parts)
            ids = tokenizer.encode(text).ids
            if len(ids) >= LONG_TOKENS:
                words = text.split()
                while len(tokenizer.encode(" ".join(words)).ids) > LONG_TOKENS:
                    words.pop()
                out.append(" ".join(words))
                break
    return out


def mean_tokens(tokenizer, texts: Sequence[str]) -> float:
    return float(np.mean([len(e.ids) for e in tokenizer.encode_batch(list(texts))]))


class TorchEncoder:
    """The baseline: transformers AutoModel, mean pooling and normalisation in torch, batched and
    length-sorted exactly like TextEncoder so only the runtime differs."""

    def __init__(self, model_dir: Path, tokenizer_path: Path, max_length: int, batch_size: int, threads: int):
        import torch
        from transformers import AutoModel

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.attn = getattr(self.model.config, "_attn_implementation", "?")
        self.tokenizer, self.pad_id = load_tokenizer(tokenizer_path, max_length)
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self.torch
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        order = np.argsort([len(r) for r in ids], kind="stable")
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for b in range(0, len(order), self.batch_size):
                rows = order[b : b + self.batch_size]
                input_ids, mask = map(torch.from_numpy, pad_batch([ids[i] for i in rows], self.pad_id))
                states = self.model(input_ids=input_ids, attention_mask=mask,
                                    token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
                m = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, p=2.0, dim=1).numpy()
        return out


def items_per_s(encode: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], repeats: int) -> list[float]:
    encode(texts[: min(len(texts), 64)])  # warm-up: first-call allocations and kernel choices
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    return rates


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def cuda_line() -> str:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    try:
        import torch

        torch_cuda = torch.cuda.is_available()
    except ImportError:
        torch_cuda = False
    if "CUDAExecutionProvider" in providers:
        return (f"onnxruntime offers the CUDA provider ({providers}; torch CUDA: {torch_cuda}): a CUDA row is "
                "added (TextEncoder(device='cuda') raises if the session falls back to CPU)")
    return (f"GPU: the CUDA provider is unavailable here (onnxruntime offers {providers}; torch CUDA "
            f"available: {torch_cuda}); no GPU figures in this run")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="1,16,64")
    p.add_argument("--short-texts", type=int, default=256, help="short texts per repetition")
    p.add_argument("--long-texts", type=int, default=64, help="long texts per repetition")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and onnxruntime")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]

    started = header("Encoder: torch eager vs onnxruntime fp32 (TextEncoder) vs onnxruntime int8")
    note(cuda_line())
    settings = InferenceSettings(encoder_precision="fp32")
    onnx_dir = encoder_dir(settings)
    manifest = json.loads((onnx_dir / MANIFEST_FILE).read_text())
    model_dir = Path(manifest["source_model_dir"])
    note(f"model {manifest['version']} ({manifest['dim']}-d), exported folder {onnx_dir}; threads = {args.threads}")

    t = time.perf_counter()
    int8_dir = ensure_precision(onnx_dir, "int8", settings.data_dir / "models")
    note(f"int8 copy {int8_dir} ready in {time.perf_counter() - t:.1f} s (quantized once, then cached); "
         f"model file {mib((onnx_dir / MODEL_FILE).stat().st_size)} fp32 -> "
         f"{mib((int8_dir / MODEL_FILE).stat().st_size)} int8")
    tokenizer, _ = load_tokenizer(onnx_dir / manifest["tokenizer"], int(manifest["max_length"]))
    texts = {"short": short_texts(args.short_texts, args.seed)}
    texts["long"] = long_texts(texts["short"], args.long_texts, tokenizer, args.seed)
    for kind, ts in texts.items():
        note(f"{kind} texts: {len(ts)} per repetition, {mean_tokens(tokenizer, ts):.1f} tokens on average "
             f"(e.g. {ts[0][:70]!r})")

    rows = []
    quality = []
    for batch in batch_sizes:
        backends = {
            "torch eager (baseline)": TorchEncoder(model_dir, onnx_dir / manifest["tokenizer"],
                                                   int(manifest["max_length"]), batch, args.threads),
            "onnxruntime fp32 (TextEncoder)": TextEncoder(onnx_dir, device="cpu", batch_size=batch,
                                                          threads=args.threads),
            "onnxruntime int8 (per-channel)": TextEncoder(int8_dir, device="cpu", batch_size=batch,
                                                          threads=args.threads),
        }
        if cuda_available():
            backends["onnxruntime fp32 (CUDA provider)"] = TextEncoder(onnx_dir, device="cuda", batch_size=batch)
        if batch == batch_sizes[0]:
            note(f"torch attention implementation: {backends['torch eager (baseline)'].attn}")
        for kind, ts in texts.items():
            rates = {name: items_per_s(b.encode, ts, args.repeats) for name, b in backends.items()}
            base = median(rates["torch eager (baseline)"])
            fp32 = median(rates["onnxruntime fp32 (TextEncoder)"])
            for name, r in rates.items():
                rows.append([kind, batch, name, spread(r, 1), ratio(median(r), base), ratio(median(r), fp32)])
            tok = items_per_s(lambda x: tokenizer.encode_batch(list(x)), ts, args.repeats)
            rows.append([kind, batch, "tokenizer alone (ceiling)", spread(tok, 0), "–", "–"])
            print(f"  … batch {batch} {kind} done", file=sys.stderr, flush=True)
            if batch == batch_sizes[-1]:
                v32 = backends["onnxruntime fp32 (TextEncoder)"].encode(ts)
                v8 = backends["onnxruntime int8 (per-channel)"].encode(ts)
                vt = backends["torch eager (baseline)"].encode(ts)
                c8, ct = cosine_rows(v8, v32), cosine_rows(vt, v32)
                quality.append([kind, "int8 vs fp32", f"{c8.mean():.4f}", f"{c8.min():.4f}",
                                f"{np.abs(v8 - v32).max():.3g}"])
                quality.append([kind, "torch vs fp32", f"{ct.mean():.6f}", f"{ct.min():.6f}",
                                f"{np.abs(vt - v32).max():.3g}"])
        del backends

    table(["texts", "batch", "runtime", "items/s", "vs torch", "vs fp32"], rows)
    table(["texts", "pair", "mean cosine", "min cosine", "max |Δ|"], quality)
    note("items/s: median of the repetitions (min–max); one repetition encodes all texts of its kind")
    note(f"bench process RSS at end: {mib(rss_bytes()[0])} (peak {mib(rss_bytes()[1])})")
    footer(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
