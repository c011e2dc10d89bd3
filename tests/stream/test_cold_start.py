"""Cold start through the real broker with the real pretrained encoder: words in, relevant items out."""

from __future__ import annotations

import pytest

from inference.schemas import Intent, Item, Recommendation
from tests.fixtures.kafka_fixtures import Deployment

CATALOG = {
    "shoe-1": "Men's trail running shoes with grippy soles",
    "shoe-2": "Lightweight road running sneakers",
    "camp-1": "Two-person camping tent, waterproof",
    "camp-2": "Down sleeping bag for camping, -5C",
    "camp-3": "Portable camping gas stove",
    "kitchen-1": "Ceramic teapot with bamboo handle",
    "kitchen-2": "Set of four espresso cups",
    "beauty-1": "Matte red lipstick",
    "beauty-2": "Hydrating face moisturiser",
    "office-1": "A5 lined notebook, hardcover",
    "office-2": "Blue ballpoint pens, pack of 10",
    "garden-1": "Terracotta flower pot, 20 cm",
}
RELEVANT = {"shoe-1", "shoe-2", "camp-1", "camp-2", "camp-3"}


@pytest.mark.pretrained
def test_a_new_user_s_words_give_personal_first_recommendations(broker, tmp_path_factory, pretrained_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("cold_start"), pretrained_onnx_dir)
    try:
        worker = d.start_worker()
        for item_id, title in CATALOG.items():
            d.send("items", item_id, Item(schema=1, item_id=item_id, title=title))
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= len(CATALOG), 60, "the catalog")
        recs = d.reader("recommendations")
        d.send("intents", "newcomer", Intent(schema=1, user_id="newcomer", text="running shoes and camping gear"))
        message = recs.until(lambda ms: any(m.key == b"newcomer" for m in ms))[-1]
        rec = Recommendation.model_validate_json(message.value)
        top = [i.item_id for i in rec.items[:5]]
        assert set(top) == RELEVANT, f"top 5 for 'running shoes and camping gear': {top}"
        assert all(i.reason == "matches the interests you told us about" for i in rec.items[:5])
        state = worker.get("/recommendations/newcomer?k=5")
        assert {i["item_id"] for i in state["items"]} == RELEVANT
        assert "running shoes and camping" not in worker.log_tail(500), "the user's words must not be logged"
        worker.stop()
        stored = b"".join(p.read_bytes() for p in (d.root / "state").rglob("*") if p.is_file())
        assert b"running shoes and camping" not in stored, "the user's words must not be stored"
        assert b"newcomer" in stored  # the scan does see what the store wrote
    finally:
        d.close()
