"""Runs inside the RecBole peer's own venv (see :mod:`training.peer`); not imported by streamrec.

``python peer_runner.py CONFIG.json``: train RecBole 1.2.1 SASRec on the atomic files named by
the config, keep its best validation epoch, score the test cases of ``cases.json`` with it and
rank them with streamrec's own :func:`training.metrics.rank_items` (numpy + torch only), writing
``ranks.npz`` (top, ranks, lengths) and ``info.json``; for each file named in ``score_cases``
(phase -> cases file), the raw scores of all items for those cases (``scores-<phase>.npy``, our
item order, -inf for items RecBole never saw), so streamrec can blend them like its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(config_path: str) -> int:
    cfg = json.loads(Path(config_path).read_text())
    sys.path.insert(0, cfg["repo_root"])

    import numpy as np
    import torch

    torch.set_num_threads(int(cfg["threads"]))
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.interaction import Interaction
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    from training.metrics import rank_items

    config = Config(
        model="SASRec",
        dataset=cfg["dataset"],
        config_dict={
            "data_path": cfg["data_path"],
            "checkpoint_dir": cfg["checkpoint_dir"],
            "benchmark_filename": ["train", "valid", "test"],
            "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
            "alias_of_item_id": ["item_id_list"],
            "MAX_ITEM_LIST_LENGTH": cfg["max_len"],
            "train_neg_sample_args": None,
            "loss_type": "CE",
            "epochs": cfg["epochs"],
            "stopping_step": cfg["stopping_step"],
            "train_batch_size": cfg["batch_size"],
            "eval_batch_size": 2048,
            "learning_rate": cfg["lr"],
            "hidden_size": cfg["hidden"],
            "inner_size": 4 * cfg["hidden"],
            "n_layers": cfg["layers"],
            "n_heads": cfg["heads"],
            "hidden_dropout_prob": cfg["dropout"],
            "attn_dropout_prob": cfg["dropout"],
            "metrics": ["Hit", "NDCG"],
            "topk": [10],
            "valid_metric": "NDCG@10",
            "eval_args": {"mode": "full", "order": "TO", "group_by": "user"},
            "seed": cfg["seed"],
            "reproducibility": True,
            "show_progress": bool(cfg["progress"]),
            "use_gpu": torch.cuda.is_available(),
            "worker": 0,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)

    start = time.perf_counter()
    best_score, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=bool(cfg["progress"]))
    train_s = time.perf_counter() - start
    epochs = len(trainer.train_loss_dict)
    # torch >= 2.6 loads only plain tensors by default; RecBole's checkpoint holds its Config.
    checkpoint = torch.load(trainer.saved_model_file, map_location=config["device"], weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()

    start = time.perf_counter()
    payload = json.loads(Path(cfg["cases"]).read_text())
    item_ids = payload["item_ids"]
    known = set(dataset.field2token_id[dataset.iid_field])
    ours_to_rb = torch.as_tensor(
        [dataset.token2id(dataset.iid_field, t) if t in known else 0 for t in item_ids]
    )
    unknown = torch.as_tensor([t not in known for t in item_ids])
    cases = payload["cases"]
    batch = 512

    def scores_of(chunk):
        """All items' scores for a chunk of cases, in our item order. A case with no past (a
        validation case of a user with two units) scores every item 0: SASRec needs one item."""
        lengths = [len(c["past"]) for c in chunk]
        seq = torch.zeros(len(chunk), cfg["max_len"], dtype=torch.int64)
        for row, c in enumerate(chunk):
            if c["past"]:
                seq[row, : len(c["past"])] = torch.as_tensor(dataset.token2id(dataset.iid_field, c["past"]))
        inter = Interaction(
            {model.ITEM_SEQ: seq, model.ITEM_SEQ_LEN: torch.as_tensor([max(n, 1) for n in lengths])}
        ).to(config["device"])
        scores = model.full_sort_predict(inter).view(len(chunk), -1).cpu()[:, ours_to_rb]
        scores[torch.as_tensor([n == 0 for n in lengths])] = 0.0
        scores[:, unknown] = -torch.inf
        return scores

    tops, ranks = [], []
    with torch.no_grad():
        for lo in range(0, len(cases), batch):
            chunk = cases[lo : lo + batch]
            scores = scores_of(chunk)
            top, rank = rank_items(
                scores,
                [np.asarray(c["exclude"], dtype=np.int64) for c in chunk],
                [np.asarray(c["targets"], dtype=np.int64) for c in chunk],
                10,
            )
            tops.append(top)
            ranks += rank
        for phase, path in (cfg.get("score_cases") or {}).items():
            phase_cases = json.loads(Path(path).read_text())["cases"]
            matrix = [scores_of(phase_cases[lo : lo + batch]).numpy() for lo in range(0, len(phase_cases), batch)]
            np.save(Path(cfg["output"]).parent / f"scores-{phase}.npy",
                    np.concatenate(matrix).astype(np.float32) if matrix else np.zeros((0, len(item_ids)), np.float32))
    eval_s = time.perf_counter() - start
    np.savez(
        cfg["output"],
        top=np.concatenate(tops),
        ranks=np.concatenate(ranks),
        lengths=np.asarray([len(r) for r in ranks]),
    )
    Path(cfg["info"]).write_text(
        json.dumps(
            {
                "recbole": recbole.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "model": "SASRec",
                "loss": "CE",
                "epochs": epochs,
                "best_epoch": epochs - int(trainer.cur_step),
                "best_valid_ndcg@10": float(best_score),
                "train_s": train_s,
                "eval_s": eval_s,
                "items_unknown_to_recbole": int(unknown.sum()),
                "recbole_masks_history": False,
                "device": str(config["device"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
