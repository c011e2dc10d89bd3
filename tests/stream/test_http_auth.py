"""The worker's HTTP endpoints with a bearer token configured, on a real worker process."""

from __future__ import annotations

import urllib.error
import urllib.request


from tests.fixtures.kafka_fixtures import Deployment

TOKEN = "t0ps3cret-token"


def status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_token_guards_user_data_but_not_probes_and_never_reaches_the_log(broker, tmp_path_factory, tiny_onnx_dir):
    d = Deployment(broker, tmp_path_factory.mktemp("auth"), tiny_onnx_dir, STREAMREC_HTTP_TOKEN=TOKEN)
    try:
        worker = d.start_worker()
        url = worker.url
        assert status(f"{url}/recommendations/u1") == 401
        assert status(f"{url}/recommendations/u1", {"Authorization": "Bearer wrong"}) == 401
        assert status(f"{url}/recommendations/u1", {"Authorization": f"Bearer {TOKEN}"}) == 200
        assert status(f"{url}/stats") == 401
        assert status(f"{url}/health") == 200 and status(f"{url}/metrics") == 200
        assert status(f"{url}/recommendations/{'x' * 300}", {"Authorization": f"Bearer {TOKEN}"}) == 400
        worker.stop()
        assert TOKEN not in (d.root / "worker.log").read_text()
    finally:
        d.close()
