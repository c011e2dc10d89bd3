"""deploy/k8s: every overlay renders, validates against the Kubernetes schemas and passes the policy scan.

Built-in kinds are validated by kubernetes-validate (strict JSON schemas of Kubernetes 1.31 and
1.37). It has no schemas for the custom resources (Strimzi, KEDA, Prometheus operator), so
those are checked here structurally: API version, required fields, and their references to
each other (node pools and topics to their Kafka cluster, the ScaledObject to its Deployment,
monitors to the pods they scrape). checkov then scans the rendered manifests; a finding fails
the test unless deploy/k8s/policy-exceptions.yaml accepts it with a reason.
"""

from __future__ import annotations

import json
import re
import subprocess
import typing
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

import stream.settings
from stream.settings_doc import COMPONENTS
from tests.deploy.conftest import K8S, OVERLAYS, Rendered

pytestmark = pytest.mark.deploy

SCHEMA_VERSIONS = ("1.31", "1.37")
# Custom resources (API group, kind): no upstream schema in kubernetes-validate, checked below.
CUSTOM_KINDS = {
    ("kafka.strimzi.io/v1", "Kafka"),
    ("kafka.strimzi.io/v1", "KafkaNodePool"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("kafka.strimzi.io/v1", "KafkaUser"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
# The topics the worker reads or writes (it cannot create them: auto-creation is off), and those
# of the segmentation and training components.
TOPICS = tuple(dict.fromkeys((
    *getattr(stream.settings, "TOPICS", ()),
    "events", "items", "intents", "requests", "recommendations", "deadletter", "segments", "model-updates",
    "erasures",
)))
# Keyed by user id: must be co-partitioned with events (same count), so one worker owns a user.
USER_KEYED = tuple(t for t in TOPICS if t not in ("items", "deadletter", "model-updates"))
ENV_FILE = K8S / "base" / "config" / "streamrec.env"
# Secrets the training job needs (it serves no HTTP, so no STREAMREC_HTTP_TOKEN).
TRAIN_SECRETS = {"STREAMREC_QDRANT_API_KEY", "STREAMREC_KAFKA_SASL_PASSWORD", "STREAMREC_PSEUDONYMISATION_KEY"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "CronJob")


# --- helpers -------------------------------------------------------------------------------------

def settings_fields() -> dict[str, bool]:
    """Every STREAMREC_* variable of the settings models -> whether it is a secret."""
    fields = {}
    for _, model in COMPONENTS:
        prefix = model.model_config.get("env_prefix", "")
        for name, field in model.model_fields.items():
            annotation = field.annotation
            secret = annotation is SecretStr or SecretStr in typing.get_args(annotation)
            fields[f"{prefix}{name.upper()}"] = secret
    return fields


def deliberately_unset() -> dict[str, str]:
    """`# unset: NAME - reason` lines of the env file: settings left at their default on purpose."""
    found = re.findall(r"^# unset: (STREAMREC_\w+) - (.+)$", ENV_FILE.read_text(), flags=re.MULTILINE)
    return dict(found)


def config_map(r: Rendered) -> dict[str, str]:
    [cm] = [doc for doc in r.of_kind("ConfigMap") if doc["metadata"]["name"].startswith("streamrec-config")]
    return cm["data"]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def pod_labels(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return doc["spec"]["template"]["metadata"]["labels"]


def workloads(r: Rendered) -> list[dict]:
    return [doc for kind in WORKLOAD_KINDS for doc in r.of_kind(kind)]


def selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container(doc: dict, name: str) -> dict:
    [found] = [c for c in pod_spec(doc)["containers"] if c["name"] == name]
    return found


def topic(r: Rendered, name: str) -> dict:
    prefix = config_map(r)["STREAMREC_TOPIC_PREFIX"]
    found = [t for t in r.of_kind("KafkaTopic") if t["spec"].get("topicName", t["metadata"]["name"]) == prefix + name]
    assert len(found) == 1, f"{r.name}: expected one KafkaTopic for {prefix}{name}, found {len(found)}"
    return found[0]


# --- rendering and schemas -----------------------------------------------------------------------

def test_base_and_overlays_render(rendered):
    assert rendered["base"].docs
    for r in (rendered[name] for name in OVERLAYS):
        assert r.docs, f"{r.name} rendered nothing"
        names = Counter((d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in r.docs)
        assert not [n for n, c in names.items() if c > 1], f"{r.name}: duplicate resources"
        [namespace] = [d["metadata"]["name"] for d in r.of_kind("Namespace")]
        assert {d["metadata"].get("namespace") for d in r.docs if d["kind"] != "Namespace"} == {namespace}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_kinds_match_the_kubernetes_schemas(deploy_tools, rendered, overlay):
    r = rendered[overlay]
    done = subprocess.run(
        [str(deploy_tools.python), str(Path(__file__).with_name("_schemas.py")), str(r.path), *SCHEMA_VERSIONS],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == len(r.docs) * len(SCHEMA_VERSIONS)
    failed = [f"{x['kind']}/{x['name']} (k8s {x['version']}): {x['errors']}" for x in rows if x["status"] == "failed"]
    assert not failed, "\n".join(failed)
    api = {(d["kind"], d["metadata"]["name"]): d["apiVersion"] for d in r.docs}
    unknown = sorted({(api[(x["kind"], x["name"])], x["kind"]) for x in rows if x["status"] == "no-schema"}
                     - CUSTOM_KINDS)
    # A built-in kind without a schema is a wrong apiVersion (e.g. apps/v1beta1), not a CRD.
    assert not unknown, f"no schema and not a known custom resource: {unknown}"
    assert any(x["status"] == "passed" for x in rows)


# --- custom resources, structurally ------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_resources_are_well_formed(rendered, overlay):
    r = rendered[overlay]
    for doc in r.docs:
        group = doc["apiVersion"].rpartition("/")[0]
        if "." in group and not group.endswith(".k8s.io"):
            assert (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS, f"unexpected {doc['apiVersion']} {doc['kind']}"

    [kafka] = r.of_kind("Kafka")
    cluster = kafka["metadata"]["name"]
    spec = kafka["spec"]
    assert "zookeeper" not in spec, "KRaft only: Strimzi >= 0.46 has no ZooKeeper"
    assert not {"replicas", "storage"} & set(spec["kafka"]), "v1 API: replicas and storage belong to node pools"
    assert re.fullmatch(r"\d+\.\d+\.\d+", spec["kafka"]["version"])
    listeners = spec["kafka"]["listeners"]
    assert listeners and len({x["name"] for x in listeners}) == len(listeners)
    assert len({x["port"] for x in listeners}) == len(listeners)
    for listener in listeners:
        assert re.fullmatch(r"[a-z0-9]{1,11}", listener["name"]), listener["name"]
        assert listener["type"] in {"internal", "cluster-ip", "route", "loadbalancer", "nodeport", "ingress"}
        assert isinstance(listener["tls"], bool)
        # Strimzi keeps 9090 (control plane), 9091 (replication) and 9404 (metrics) for itself.
        assert listener["port"] >= 9092 and listener["port"] != 9404
    assert isinstance(spec["kafka"].get("config", {}), dict)
    assert {"topicOperator", "userOperator"} <= set(spec["entityOperator"]), "topics and users are CRs here"

    pools = r.of_kind("KafkaNodePool")
    for pool in pools:
        assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert isinstance(pool["spec"]["replicas"], int) and pool["spec"]["replicas"] >= 1
        assert pool["spec"]["roles"] and set(pool["spec"]["roles"]) <= {"controller", "broker"}
        storage = pool["spec"]["storage"]
        assert storage["type"] in {"jbod", "ephemeral", "persistent-claim"}
        if storage["type"] == "jbod":
            ids = [v["id"] for v in storage["volumes"]]
            assert len(set(ids)) == len(ids)
            for volume in storage["volumes"]:
                assert volume["type"] in {"ephemeral", "persistent-claim"}
                if volume["type"] == "persistent-claim":
                    assert re.fullmatch(r"\d+(Gi|Ti|Mi)", volume["size"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    assert controllers % 2 == 1, "a KRaft quorum needs an odd number of controllers"
    assert brokers >= 1

    replication = spec["kafka"]["config"]
    assert int(replication["default.replication.factor"]) <= brokers
    assert int(replication["offsets.topic.replication.factor"]) <= brokers
    assert int(replication["min.insync.replicas"]) <= int(replication["default.replication.factor"])
    for t in r.of_kind("KafkaTopic"):
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert isinstance(t["spec"]["partitions"], int) and t["spec"]["partitions"] >= 1
        assert isinstance(t["spec"]["replicas"], int) and 1 <= t["spec"]["replicas"] <= brokers
        config = t["spec"].get("config", {})
        assert config.get("cleanup.policy", "delete") in {"delete", "compact", "compact,delete"}
        assert int(config.get("min.insync.replicas", 1)) <= t["spec"]["replicas"]
        if "retention.ms" in config:
            assert isinstance(config["retention.ms"], int) and config["retention.ms"] > 0
        assert all(isinstance(v, (str, int, float, bool)) for v in config.values())

    auth_types = {x.get("authentication", {}).get("type") for x in listeners}
    for user in r.of_kind("KafkaUser"):
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert user["spec"]["authentication"]["type"] in auth_types, "no listener accepts this user's authentication"
        if "authorization" in user["spec"]:
            assert "authorization" in spec["kafka"], "ACLs need authorization on the Kafka cluster"

    deployments = {d["metadata"]["name"]: d for d in r.of_kind("Deployment")}
    auths = {a["metadata"]["name"]: a for a in r.of_kind("TriggerAuthentication")}
    for so in r.of_kind("ScaledObject"):
        target = so["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment" and target["name"] in deployments
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "kafka"
            meta = trigger["metadata"]
            assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(meta)
            assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
            assert int(meta["lagThreshold"]) > 0
            assert meta.get("sasl", "none") in {"none", "plaintext", "scram_sha256", "scram_sha512"}
            assert meta.get("tls", "disable") in {"enable", "disable"}
            if meta.get("sasl", "none") != "none":
                auth = auths[trigger["authenticationRef"]["name"]]["spec"]
                params = {x["parameter"] for x in auth.get("secretTargetRef", []) + auth.get("env", [])}
                assert {"username", "password"} <= params
                if meta.get("tls") == "enable":
                    assert "ca" in params
                containers = {c["name"]: c for c in pod_spec(deployments[target["name"]])["containers"]}
                for ref in auth.get("env", []):
                    # KEDA resolves these from the target container's env and envFrom.
                    assert ref["containerName"] in containers
                    c = containers[ref["containerName"]]
                    env = {e["name"] for e in c.get("env", [])}
                    from_maps = {k for e in c.get("envFrom", []) if "configMapRef" in e
                                 for cm in r.of_kind("ConfigMap") if cm["metadata"]["name"] == e["configMapRef"]["name"]
                                 for k in cm["data"]}
                    assert ref["name"] in env | from_maps, f"KEDA cannot resolve {ref['name']}"

    pods = {(d["kind"], d["metadata"]["name"]): d for d in workloads(r)}
    for pm in r.of_kind("PodMonitor"):
        selector = pm["spec"]["selector"]
        matched = [d for d in pods.values() if selects(selector, pod_labels(d))]
        labels_used = set(selector.get("matchLabels", {})) | {e["key"] for e in selector.get("matchExpressions", [])}
        if any(k.startswith("strimzi.io/") for k in labels_used):
            continue  # selects the pods Strimzi creates, which are not in the manifests
        assert matched, f"PodMonitor {pm['metadata']['name']} selects no pod"
        for endpoint in pm["spec"]["podMetricsEndpoints"]:
            for d in matched:
                ports = {p["name"] for c in pod_spec(d)["containers"] for p in c.get("ports", [])}
                assert endpoint["port"] in ports
    services = r.of_kind("Service")
    for sm in r.of_kind("ServiceMonitor"):
        matched = [s for s in services if selects(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
        assert len(matched) == 1, f"ServiceMonitor {sm['metadata']['name']} should select one Service"
        for endpoint in sm["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}


# --- settings wiring -------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_is_in_the_configmap_or_a_secret(rendered, overlay, monkeypatch):
    r = rendered[overlay]
    data = config_map(r)
    fields = settings_fields()
    unset = deliberately_unset()
    missing = [var for var, secret in fields.items() if not secret and var not in data and var not in unset]
    assert not missing, f"settings missing from deploy/k8s/base/config/streamrec.env: {missing}"
    assert all(len(reason.split()) >= 3 for reason in unset.values()), "say why a setting stays unset"
    assert not set(unset) & set(data), f"both set and unset: {set(unset) & set(data)}"
    leaked = [var for var in data if fields.get(var)]
    assert not leaked, f"secrets must come from a Secret, not the ConfigMap: {leaked}"
    unknown = [var for var in list(data) + list(unset) if var.startswith("STREAMREC_") and var not in fields]
    assert not unknown, f"no such setting (stream/settings.py, inference/settings.py): {unknown}"

    secrets = {var for var, secret in fields.items() if secret}
    for doc, needed in ((r.one("Deployment", "streamrec-worker"), secrets),
                        (r.one("CronJob", "streamrec-train"), secrets & TRAIN_SECRETS)):
        [main] = pod_spec(doc)["containers"]
        assert any(e.get("configMapRef", {}).get("name") == config_map_name(r) for e in main.get("envFrom", []))
        env = {e["name"]: e for e in main.get("env", [])}
        for var in needed:
            assert "secretKeyRef" in env.get(var, {}).get("valueFrom", {}), f"{doc['kind']}: {var} not from a Secret"

    # The values are valid for the settings models (e.g. no empty string for an optional int).
    for var in list(fields):
        monkeypatch.delenv(var, raising=False)
    for var, value in data.items():
        monkeypatch.setenv(var, value)
    for var in secrets:  # what the Secrets provide at run time
        monkeypatch.setenv(var, "from-a-secret")
    for _, model in COMPONENTS:
        model()


def config_map_name(r: Rendered) -> str:
    [cm] = [doc for doc in r.of_kind("ConfigMap") if doc["metadata"]["name"].startswith("streamrec-config")]
    return cm["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_references_resolve(rendered, overlay):
    r = rendered[overlay]
    # Strimzi writes a Secret per KafkaUser and one with the cluster CA certificate.
    generated = {u["metadata"]["name"] for u in r.of_kind("KafkaUser")}
    generated |= {f"{k['metadata']['name']}-cluster-ca-cert" for k in r.of_kind("Kafka")}
    rendered_secrets = {s["metadata"]["name"] for s in r.of_kind("Secret")}
    external = {"streamrec-secrets"} if overlay == "prod" else set()  # created out of band (deploy/README.md)
    known = generated | rendered_secrets | external
    refs = []
    for doc in workloads(r):
        spec = pod_spec(doc)
        for c in spec["containers"]:
            refs += [(doc["kind"], e["valueFrom"]["secretKeyRef"]["name"]) for e in c.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})]
        refs += [(doc["kind"], v["secret"]["secretName"]) for v in spec.get("volumes", []) if "secret" in v]
    for auth in r.of_kind("TriggerAuthentication"):
        refs += [("TriggerAuthentication", ref["name"]) for ref in auth["spec"].get("secretTargetRef", [])]
    for sm in r.of_kind("ServiceMonitor"):
        refs += [("ServiceMonitor", e["authorization"]["credentials"]["name"]) for e in sm["spec"]["endpoints"]
                 if "authorization" in e]
    assert refs
    unresolved = [f"{kind}: {name}" for kind, name in refs if name not in known]
    assert not unresolved, f"references to Secrets that nothing creates: {unresolved}"
    if overlay == "dev":
        keys = {ref["key"] for doc in workloads(r) for c in pod_spec(doc)["containers"] for e in c.get("env", [])
                if (ref := e.get("valueFrom", {}).get("secretKeyRef")) and ref["name"] == "streamrec-secrets"}
        assert keys and keys <= set(r.one("Secret", "streamrec-secrets")["data"])


# --- topics, partitions, scaling --------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_exists_and_user_keyed_topics_are_copartitioned(rendered, overlay):
    r = rendered[overlay]
    for name in TOPICS:
        topic(r, name)
    assert len(r.of_kind("KafkaTopic")) == len(TOPICS)
    counts = {name: topic(r, name)["spec"]["partitions"] for name in USER_KEYED}
    assert len(set(counts.values())) == 1, f"user-keyed topics must have one partition count: {counts}"
    assert int(config_map(r)["STREAMREC_TOPIC_PARTITIONS"]) == counts["events"]
    assert topic(r, "items")["spec"]["config"]["cleanup.policy"] == "compact"
    retention = {name: topic(r, name)["spec"]["config"].get("retention.ms") for name in TOPICS}
    assert retention["recommendations"] < retention["events"] < retention["deadletter"]


@pytest.mark.parametrize("overlay", ("base", *OVERLAYS))
def test_worker_replicas_are_bounded_by_the_events_partitions(rendered, overlay):
    r = rendered[overlay]
    data = config_map(r)
    partitions = topic(r, "events")["spec"]["partitions"]
    deployment = r.one("Deployment", "streamrec-worker")
    assert deployment["spec"].get("replicas", 1) <= partitions
    [so] = [s for s in r.of_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == "streamrec-worker"]
    assert so["spec"]["maxReplicaCount"] <= partitions
    [trigger] = so["spec"]["triggers"]
    assert trigger["metadata"]["topic"] == data["STREAMREC_TOPIC_PREFIX"] + "events"
    assert trigger["metadata"]["consumerGroup"] == data["STREAMREC_APP_ID"]
    assert trigger["metadata"]["bootstrapServers"] == data["STREAMREC_KAFKA_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"].get("allowIdleConsumers", "false") == "false"
    [kafka] = r.of_kind("Kafka")
    host, port = data["STREAMREC_KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert host == f"{kafka['metadata']['name']}-kafka-bootstrap"
    [listener] = [x for x in kafka["spec"]["kafka"]["listeners"] if x["port"] == int(port)]
    # The client settings match what the listener speaks.
    protocol = data["STREAMREC_KAFKA_SECURITY_PROTOCOL"]
    assert protocol.endswith("SSL") == listener["tls"]
    assert protocol.startswith("SASL") == (listener.get("authentication", {}).get("type", "").startswith("scram"))
    if protocol.startswith("SASL"):
        assert data["STREAMREC_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert data["STREAMREC_KAFKA_SASL_USERNAME"] in {u["metadata"]["name"] for u in r.of_kind("KafkaUser")}
    assert trigger["metadata"].get("tls", "disable") == ("enable" if listener["tls"] else "disable")


# --- workloads ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_and_bounded(rendered, overlay):
    r = rendered[overlay]
    for doc in workloads(r):
        where = f"{overlay} {doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        mounts_needed = []
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert "ALL" in sc["capabilities"]["drop"], where
            assert not sc.get("capabilities", {}).get("add"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            assert c["image"].rpartition(":")[2] not in ("", "latest") and ":" in c["image"], where
            mounts_needed.append({m["mountPath"] for m in c.get("volumeMounts", [])})
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes | {
                t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])
            }, where
    # streamrec's containers get a writable STREAMREC_DATA_DIR and /tmp on a read-only root.
    data_dir = config_map(r)["STREAMREC_DATA_DIR"]
    for doc in [r.one("Deployment", "streamrec-worker"), r.one("CronJob", "streamrec-train")]:
        [main] = pod_spec(doc)["containers"]
        writable = {m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")}
        assert {data_dir, "/tmp"} <= writable


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_probes_use_health_on_the_http_port(rendered, overlay):
    r = rendered[overlay]
    main = container(r.one("Deployment", "streamrec-worker"), "worker")
    port = int(config_map(r)["STREAMREC_HTTP_PORT"])
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert config_map(r)["STREAMREC_HTTP_HOST"] == "0.0.0.0"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = main[probe]["httpGet"]
        assert get["path"] == "/health"
        assert ports.get(get["port"], get["port"]) == port
    service = r.one("Service", "streamrec")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_stop_deadline_ends_before_the_grace_period(rendered, overlay):
    """An overdue stop must persist state and exit before Kubernetes' SIGKILL (stream/stop_deadline.py)."""
    r = rendered[overlay]
    grace = pod_spec(r.one("Deployment", "streamrec-worker"))["terminationGracePeriodSeconds"]
    assert float(config_map(r)["STREAMREC_STOP_TIMEOUT_S"]) + 10 <= grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_disruption_budget_and_a_network_policy(rendered, overlay):
    r = rendered[overlay]
    policies = r.of_kind("NetworkPolicy")
    assert any(p["spec"]["podSelector"] == {} and "Ingress" in p["spec"]["policyTypes"] and not p["spec"].get("ingress")
               for p in policies), "a default-deny ingress policy"
    for doc in workloads(r):
        labels = pod_labels(doc)
        assert [p for p in policies if p["spec"]["podSelector"] and selects(p["spec"]["podSelector"], labels)], \
            f"{doc['kind']}/{doc['metadata']['name']}: no NetworkPolicy of its own"
        if doc["kind"] != "CronJob":
            assert [b for b in r.of_kind("PodDisruptionBudget") if selects(b["spec"]["selector"], labels)], \
                f"{doc['kind']}/{doc['metadata']['name']}: no PodDisruptionBudget"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_cronjob_shares_the_models_volume_with_the_workers(rendered, overlay):
    r = rendered[overlay]
    models = config_map(r)["STREAMREC_DATA_DIR"] + "/models"
    r.one("PersistentVolumeClaim", "streamrec-models")
    cron = r.one("CronJob", "streamrec-train")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    for doc, read_only in ((cron, False), (r.one("Deployment", "streamrec-worker"), True)):
        spec = pod_spec(doc)
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        [mount] = [m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == models]
        assert claims[mount["name"]] == "streamrec-models"
        assert bool(mount.get("readOnly")) is read_only
    assert container(cron, "train")["args"][0] == "train"
    assert container(cron, "train")["image"].split("/")[-1].startswith("streamrec-train:")


def test_gpu_scheduling_only_in_prod(rendered):
    deployment = rendered["prod"].one("Deployment", "streamrec-worker")
    prod, spec = container(deployment, "worker"), pod_spec(deployment)
    assert int(prod["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    env = {e["name"]: e.get("value") for e in prod["env"]}
    assert env["STREAMREC_ENCODER_DEVICE"] == "cuda" and env["STREAMREC_ENCODER_PRECISION"] == "fp32"
    assert "streamrec-gpu:" in prod["image"]
    dev = container(rendered["dev"].one("Deployment", "streamrec-worker"), "worker")
    assert "nvidia.com/gpu" not in dev["resources"]["limits"]
    assert "streamrec-gpu" not in dev["image"]


# --- policy scan ---------------------------------------------------------------------------------

def load_exceptions() -> list[dict]:
    entries = yaml.safe_load((K8S / "policy-exceptions.yaml").read_text())["exceptions"]
    for entry in entries:
        assert re.fullmatch(r"CKV2?_K8S_\d+", entry["check"]), entry
        assert len(entry.get("reason", "").split()) >= 8, f"{entry['check']}: give a written reason"
        assert set(entry["overlays"]) <= set(OVERLAYS) and entry["resources"]
    return entries


def test_checkov_finds_nothing_that_is_not_accepted_with_a_reason(deploy_tools, rendered):
    exceptions = load_exceptions()
    used = set()
    unaccepted = []
    for r in (rendered[name] for name in OVERLAYS):
        done = subprocess.run(
            [str(deploy_tools.checkov), "--file", str(r.path), "--framework", "kubernetes", "--skip-download",
             "--output", "json", "--quiet"],
            capture_output=True, text=True,
        )
        assert done.returncode in (0, 1), f"checkov failed on {r.name}:\n{done.stderr[-3000:]}"
        reports = json.loads(done.stdout or "[]")
        for report in reports if isinstance(reports, list) else [reports]:
            if not report:
                continue
            assert report.get("summary", {}).get("parsing_errors", 0) == 0, f"checkov could not parse {r.name}"
            for finding in report.get("results", {}).get("failed_checks", []):
                kind, _, name = finding["resource"].split(".", 2)
                resource = f"{kind}/{name}"
                matches = [(i, r.name, resource) for i, e in enumerate(exceptions)
                           if e["check"] == finding["check_id"] and r.name in e["overlays"] and resource in e["resources"]]
                used.update(matches)
                if not matches:
                    unaccepted.append(f"{r.name}: {finding['check_id']} {finding['check_name']} on {resource}")
    assert not unaccepted, "checkov findings (fix them, or accept them in deploy/k8s/policy-exceptions.yaml " \
                           "with a reason):\n" + "\n".join(unaccepted)
    declared = {(i, overlay, resource) for i, e in enumerate(exceptions) for overlay in e["overlays"]
                for resource in e["resources"]}
    stale = sorted(f"{exceptions[i]['check']} {overlay} {resource}" for i, overlay, resource in declared - used)
    assert not stale, f"policy exceptions that match no finding any more (remove them): {stale}"
