"""The live status page in a real headless Chromium against a real worker."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from inference.schemas import Event, EventType, Item
from tests.fixtures.kafka_fixtures import Deployment

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=8000", "--window-size=1200,900"]


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (make test installs it as root)")
def test_status_page_shows_live_figures_and_a_users_recommendations(broker, tmp_path_factory, tiny_onnx_dir, tmp_path):
    d = Deployment(broker, tmp_path_factory.mktemp("status"), tiny_onnx_dir, STREAMREC_INTEREST_GROUPS="2",
                   STREAMREC_GROUPS_REFRESH_S="1")
    try:
        worker = d.start_worker()
        for n in range(20):
            d.send("items", f"i{n}", Item(schema=1, item_id=f"i{n}", title=f"<b>product</b> {n}"))
        worker.wait_for(lambda s: s["processed"].get("item", 0) >= 20, 60, "the catalog")
        ts = datetime(2011, 5, 1, tzinfo=timezone.utc)
        d.send("events", "zoe", Event(schema=1, event_id="z1", user_id="zoe", type=EventType.purchase, ts=ts,
                                      item_id="i3", price=2.0))
        for n in range(8):  # enough shoppers for two interest groups
            d.send("events", f"u{n}", Event(schema=1, event_id=f"u{n}", user_id=f"u{n}", type=EventType.view, ts=ts,
                                            item_id=f"i{n + 5}"))
        worker.wait_for(lambda s: s["published"] >= 9 and s["interest_groups"], 60, "recommendations and groups")
        url = f"{worker.url}/status?user=zoe"
        dom = chromium(["--dump-dom", url], tmp_path / "profile-dom").stdout
        assert "streamrec worker" in dom
        assert worker.stats()["model_version"] in dom, "the model version is shown"
        assert 'id="events">9<' in dom, "the processed-event count is shown"
        recs = dom[dom.index('id="recs"'):]
        recs = recs[:recs.index("</table>")]
        assert "<td>i3</td>" not in recs, "a bought item is not recommended"
        assert recs.count("<tr><td>") == 10, "the user's ten recommendations are listed"
        segments = dom[dom.index('id="segments"'):]
        assert "<td>new</td><td>1</td>" in segments[:segments.index("</table>")], "zoe's segment is counted"
        assert "<td>prospect</td><td>8</td>" in segments[:segments.index("</table>")]
        groups = dom[dom.index('id="groups"'):]
        assert groups[:groups.index("</table>")].count("<tr><td>") == 2, "two named interest groups"
        assert "variant: default" in dom
        assert 'id="explore-rate">' in dom and 'id="explore-rate">–<' not in dom, "the exploration rate is shown"
        assert "&lt;b&gt;product&lt;/b&gt;" in dom or "because you" in dom or "recent activity" in dom
        assert "<b>product</b>" not in dom, "catalog text is escaped, never rendered as HTML"
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "status_page.png"
        chromium([f"--screenshot={shot}", url], tmp_path / "profile-shot")
        assert shot.exists() and shot.stat().st_size > 10_000
    finally:
        d.close()
