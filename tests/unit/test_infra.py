"""infra/: Kubernetes manifests and Terraform parse, and agree with the code they deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from pipeline.settings import REPO_ROOT, Settings
from pipeline.tasks.app import ALL_QUEUES, CPU_QUEUES, TASK_QUEUES

INFRA = REPO_ROOT / "infra"
SPEC = json.loads((REPO_ROOT / "localstack" / "resources.json").read_text())


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes around names and strings: drop them."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def terraform() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((INFRA / "terraform").glob("*.tf")):
        with path.open() as fh:
            for key, blocks in _unquote(hcl2.load(fh)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def _resource(tf: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    for block in tf["resource"]:
        if kind in block and name in block[kind]:
            return dict(block[kind][name])
    raise KeyError(f"{kind}.{name}")


def test_every_deployment_is_bounded_and_unprivileged() -> None:
    deployments = of_kind("Deployment")
    assert set(deployments) == {"shelf-listener", "shelf-worker-cpu", "shelf-worker-inference",
                                "shelf-beat"}
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert c["resources"]["limits"] and c["resources"]["requests"], (name, c["name"])
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_workers_stop_gracefully_within_the_codes_time_limit() -> None:
    limit = Settings().celery.stage_time_limit_s
    for name in ("shelf-worker-cpu", "shelf-worker-inference"):
        pod = of_kind("Deployment")[name]["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= limit + 10, name
    config = of_kind("ConfigMap")["shelf-settings"]["data"]
    assert not [k for k in config if k.startswith("SHELF_CELERY__")]  # the code's, not copies


def test_worker_children_are_recycled_before_their_pod_runs_out_of_memory() -> None:
    # Each pool child is replaced once its memory passes the cap: the children at the cap,
    # and the parent, must fit the container's limit, or the whole pod is killed first.
    cap_mb = Settings().celery.max_memory_per_child_mb
    for name in ("shelf-worker-cpu", "shelf-worker-inference"):
        (worker,) = [c for c in of_kind("Deployment")[name]["spec"]["template"]["spec"][
            "containers"] if c["name"] == "worker"]
        args = worker["command"]
        children = int(args[args.index("--concurrency") + 1]) if "--concurrency" in args else 1
        limit = str(worker["resources"]["limits"]["memory"])
        limit_mb = int(limit.removesuffix("Gi")) * 1024 if limit.endswith("Gi") else int(
            limit.removesuffix("Mi"))
        assert children * cap_mb + 400 <= limit_mb, name


def test_inference_runs_one_process_per_gpu_and_beat_is_a_singleton() -> None:
    d = of_kind("Deployment")
    inference = d["shelf-worker-inference"]["spec"]["template"]["spec"]["containers"][0]
    assert inference["command"][:4] == ["shelf", "worker", "--pool", "inference"]
    assert inference["resources"]["limits"]["nvidia.com/gpu"] == "1"
    beat = d["shelf-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"


def test_autoscaling_and_budgets_point_at_real_deployments_and_queues() -> None:
    deployments = set(of_kind("Deployment"))
    scaled = of_kind("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == deployments - {
        "shelf-beat"}
    lists = {t["metadata"]["listName"] for s in scaled.values() for t in s["spec"]["triggers"]
             if t["type"] == "redis"}
    assert lists <= set(ALL_QUEUES) and len(lists) == 5
    assert any(t["type"] == "aws-sqs-queue" for t in scaled["shelf-listener"]["spec"]["triggers"])
    smallest = {s["spec"]["scaleTargetRef"]["name"]: s["spec"].get("minReplicaCount", 0)
                for s in scaled.values()}
    for pdb in of_kind("PodDisruptionBudget").values():
        app = pdb["spec"]["selector"]["matchLabels"]["app"]
        assert app in deployments
        # a budget that keeps as many as the autoscaler's fewest would stop every drain
        assert pdb["spec"].get("minAvailable", 0) < smallest.get(app, 2), app


def _policy_actions(tf: dict[str, Any], name: str) -> set[str]:
    """The actions a policy document grants, its source documents' included."""
    for block in tf["data"]:
        doc = block.get("aws_iam_policy_document", {}).get(name)
        if doc is not None:
            out = {a for st in doc.get("statement", []) for a in st["actions"]}
            for src in doc.get("source_policy_documents", []):
                out |= _policy_actions(tf, src.split(".")[2])
            return out
    raise KeyError(name)


def test_the_role_that_runs_reconciliation_may_list_upload_versions() -> None:
    # reconciliation runs where its queue is served: the CPU workers, under their account
    assert TASK_QUEUES["shelf.reconcile"] in CPU_QUEUES
    cpu = of_kind("Deployment")["shelf-worker-cpu"]["spec"]["template"]["spec"]
    assert cpu["containers"][0]["command"][:4] == ["shelf", "worker", "--pool", "cpu"]
    account = cpu["serviceAccountName"]
    tf = terraform()
    attached = _resource(tf, "aws_iam_role_policy", account.removeprefix("shelf-"))
    assert account in attached["role"]
    document = attached["policy"].split(".")[2]

    assert {"s3:ListBucketVersions", "s3:ListBucket"} <= _policy_actions(tf, document)


def test_terraform_matches_the_local_stack_spec() -> None:
    tf = terraform()
    events = _resource(tf, "aws_sqs_queue", "events")
    queue = next(q for q in SPEC["queues"] if "redrive" in q)
    assert f"maxReceiveCount = {queue['redrive']['max_receive_count']}" in events[
        "redrive_policy"]
    notification = _resource(tf, "aws_s3_bucket_notification", "raw")
    queue = notification["queue"][0] if isinstance(notification["queue"], list) else \
        notification["queue"]
    spec = SPEC["notifications"][0]
    assert queue["filter_prefix"] == spec["prefix"] and "filter_suffix" not in queue
    assert queue["events"] == spec["events"]
    redis = _resource(tf, "aws_elasticache_replication_group", "shelf")
    assert redis["transit_encryption_enabled"] is True
    assert redis["at_rest_encryption_enabled"] is True and "auth_token" in redis
    for kind in ("aws_s3_bucket_versioning", "aws_s3_bucket_server_side_encryption_configuration",
                 "aws_s3_bucket_public_access_block"):
        assert _resource(tf, kind, "shelf")["for_each"] == "${local.buckets}"


@pytest.mark.parametrize("path", sorted((INFRA / "prometheus").glob("*.yml")),
                         ids=lambda p: Path(p).name)
def test_prometheus_files_parse(path: Path) -> None:
    assert yaml.safe_load(path.read_text())


def _policy(tf: dict[str, Any], name: str) -> list[dict[str, Any]]:
    for block in tf["data"]:
        docs = block.get("aws_iam_policy_document", {})
        if name in docs:
            return list(docs[name]["statement"])
    raise KeyError(name)


@pytest.mark.parametrize("role", ["listener", "worker"])
def test_roles_that_fetch_photos_may_list_the_raw_bucket(role: str) -> None:
    # S3 answers a missing key with 403 to a caller that may not list the bucket: a photo
    # deleted before its fetch would be retried as an expired URL instead of reported gone.
    tf = terraform()
    statements = _policy(tf, role)
    reads = [s for s in statements if "s3:GetObject" in s["actions"]
             and "${local.raw_objects}" in s["resources"]]
    lists = [s for s in statements if "s3:ListBucket" in s["actions"]
             and '${aws_s3_bucket.shelf["raw"].arn}' in s["resources"]]
    assert reads and lists


def test_the_shipped_settings_build_clients_for_real_aws_with_the_pods_role(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.settings import Settings
    from pipeline.storage.s3 import make_client

    # Given every process's environment as the ConfigMap sets it (blank endpoint and keys)
    (config,) = of_kind("ConfigMap").values()
    for k, v in config["data"].items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-the-role")  # what IRSA's chain would find
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    s = Settings()
    # Then the clients go to AWS itself, signed by the credential chain, not by empty keys
    assert s.aws.endpoint_url is None and s.aws.access_key_id is None
    client = make_client(s.aws, "s3")
    assert client.meta.endpoint_url == f"https://s3.{s.aws.region}.amazonaws.com"
    assert client._request_signer._credentials.access_key == "from-the-role"


def test_one_s3_call_to_an_endpoint_that_stopped_answering_stays_inside_a_stage() -> None:
    from pipeline.settings import AwsSettings, CelerySettings, Settings
    from pipeline.storage.s3 import make_client
    from pipeline.tasks.app import soft_limit_s

    # (the code's defaults: the test stack shortens the stage's time limit)
    s = Settings().model_copy(update={"aws": AwsSettings(), "celery": CelerySettings()})
    s3, sqs = make_client(s.aws, "s3"), make_client(s.aws, "sqs")
    attempts = s3.meta.config.retries["total_max_attempts"]
    worst = attempts * (s3.meta.config.connect_timeout + s3.meta.config.read_timeout)
    # Three such calls (a stage's download and two writes) fit in its soft time limit
    assert 3 * worst < soft_limit_s(s)
    # And SQS's long polls are not cut short by the read timeout
    assert sqs.meta.config.read_timeout > s.sqs.wait_time_s


def test_every_bucket_refuses_plain_http() -> None:
    tf = terraform()
    policy = _resource(tf, "aws_s3_bucket_policy", "tls_only")
    assert policy["for_each"] == "${local.buckets}"
    doc = next(b["aws_iam_policy_document"]["tls_only"] for b in tf["data"]
               if "tls_only" in b.get("aws_iam_policy_document", {}))
    [statement] = doc["statement"]
    assert statement["effect"] == "Deny" and statement["actions"] == ["s3:*"]
    [condition] = statement["condition"]
    assert (condition["variable"], condition["values"]) == ("aws:SecureTransport", ["false"])


def test_beat_which_only_schedules_tasks_on_redis_holds_no_aws_permission() -> None:
    tf = terraform()
    assert not [name for block in tf["resource"] for kind in ("aws_iam_role_policy",
                                                              "aws_iam_role_policy_attachment")
                for name, r in block.get(kind, {}).items() if "shelf-beat" in str(r["role"])]
    assert "beat" not in {n for b in tf["data"] for n in b.get("aws_iam_policy_document", {})}
