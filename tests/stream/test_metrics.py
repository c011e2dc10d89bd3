from prometheus_client.parser import text_string_to_metric_families

from stream.metrics import WorkerMetrics, WorkerState


def samples(metrics: WorkerMetrics) -> dict:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_come_from_the_worker_state_and_histograms_observe():
    state = WorkerState()
    metrics = WorkerMetrics(state, lambda: "model-7")
    state.processed.update({"event.purchase": 3, "event.view": 2, "item": 5})
    state.dead_lettered.update({"not_json": 4})
    state.published = 6
    state.consumer_lag = {("streamrec.events", 0): 12}
    metrics.freshness.observe(0.03)
    metrics.observe_stage("retrieve", 0.002)
    got = samples(metrics)
    assert got[("streamrec_events_processed_total", (("type", "purchase"),))] == 3
    assert got[("streamrec_messages_processed_total", (("kind", "event"),))] == 5
    assert got[("streamrec_messages_processed_total", (("kind", "item"),))] == 5
    assert got[("streamrec_deadletter_total", (("reason", "not_json"),))] == 4
    assert got[("streamrec_recommendations_published_total", ())] == 6
    assert got[("streamrec_model_info", (("version", "model-7"),))] == 1
    assert got[("streamrec_consumer_lag", (("partition", "0"), ("topic", "streamrec.events")))] == 12
    assert got[("streamrec_freshness_seconds_count", ())] == 1
    assert got[("streamrec_stage_seconds_count", (("stage", "retrieve"),))] == 1
    state.processed["event.view"] += 1
    assert samples(metrics)[("streamrec_events_processed_total", (("type", "view"),))] == 3


def test_two_workers_in_one_process_do_not_share_a_registry():
    a, b = WorkerMetrics(WorkerState(), lambda: "a"), WorkerMetrics(WorkerState(), lambda: "b")
    a.freshness.observe(1.0)
    assert samples(b)[("streamrec_freshness_seconds_count", ())] == 0
