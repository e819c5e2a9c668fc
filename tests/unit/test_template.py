"""template.yaml decisions a reviewer would check by hand: security, limits, and local/AWS parity."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.template import load

T = load()
R = T["Resources"]


def of_type(kind: str) -> dict[str, Any]:
    return {k: v for k, v in R.items() if v["Type"] == kind}


def test_runtime_and_architecture():
    fn = T["Globals"]["Function"]
    assert fn["Runtime"] == "python3.13"
    assert fn["Architectures"] == ["arm64"]
    assert fn["Environment"]["Variables"]["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"


def test_every_function_and_layer_builds_with_make():
    for res in {**of_type("AWS::Serverless::Function"), **of_type("AWS::Serverless::LayerVersion")}.values():
        assert res["Metadata"]["BuildMethod"] == "makefile"


def test_bucket_is_versioned_private_encrypted_and_tls_only():
    bucket = R["UploadBucket"]["Properties"]
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]
    policy = R["UploadBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Effect"] == "Deny"
    assert policy["Condition"]["Bool"]["aws:SecureTransport"] == "false"


def test_notifications_cover_only_upload_prefixes_and_all_creations():
    configs = R["UploadBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert {c["Filter"]["S3Key"]["Rules"][0]["Value"] for c in configs} == {"issues/", "forms/"}
    assert {c["Event"] for c in configs} == {"s3:ObjectCreated:*"}


def test_queue_visibility_is_six_times_the_timeout_and_has_a_dlq():
    queue = R["UploadQueue"]["Properties"]
    assert int(queue["VisibilityTimeout"]) >= 6 * int(T["Globals"]["Function"]["Timeout"])
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    condition = R["UploadQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Condition"]
    assert "aws:SourceArn" in condition["ArnEquals"]
    assert "aws:SourceAccount" in condition["StringEquals"]


def test_event_source_reports_partial_failures_and_caps_concurrency():
    event = R["S3ToItwinFunction"]["Properties"]["Events"]["Uploads"]["Properties"]
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "MaximumConcurrency"}


def test_tables_expire_by_ttl():
    for name in ("IdempotencyTable", "TransfersTable"):
        assert R[name]["Properties"]["TimeToLiveSpecification"]["Enabled"] is True


@pytest.mark.parametrize("role", list(of_type("AWS::IAM::Role")))
def test_iam_statements_name_their_resources(role):
    for policy in R[role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            if statement["Resource"] == "*":
                # X-Ray has no resource-level permissions; nothing else may use "*".
                assert all(a.startswith("xray:") for a in statement["Action"]), statement
            assert "*" not in statement["Action"]


def test_functions_use_explicit_roles():
    # SAM's SQS event adds AWSLambdaSQSQueueExecutionRole (Resource "*") unless the role is ours.
    for res in of_type("AWS::Serverless::Function").values():
        assert "Role" in res["Properties"]


def test_local_resolver_evaluates_conditions():
    from devstack.template import Resolver

    pseudo = {"AWS::NoValue": ""}
    no_topic = Resolver(T, parameters={"AlarmTopicArn": ""}, pseudo=pseudo)
    with_topic = Resolver(T, parameters={"AlarmTopicArn": "arn:aws:sns:us-east-1:1:t"}, pseudo=pseudo)
    actions = R["DeadLetterAlarm"]["Properties"]["AlarmActions"]
    assert no_topic.resolve(actions) == ""
    assert with_topic.resolve(actions) == ["arn:aws:sns:us-east-1:1:t"]


def statements(role: str = "S3ToItwinRole") -> list[dict[str, Any]]:
    return [s for p in R[role]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_list_bucket_is_granted_only_under_the_upload_prefixes():
    """Without it, S3 answers a HEAD of a deleted version 403 and the deleted case never fires on AWS."""
    (listing,) = [s for s in statements() if "s3:ListBucket" in s["Action"]]
    assert set(listing["Action"]) == {"s3:ListBucket", "s3:ListBucketVersions"}
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["issues/*", "forms/*"]


def test_the_role_grants_nothing_unused_and_trusts_only_this_account():
    actions = {a for s in statements() for a in s["Action"]}
    assert "sqs:ChangeMessageVisibility" not in actions
    (trust,) = R["S3ToItwinRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_only_the_upload_queue_may_redrive_from_the_dlq():
    policy = R["UploadDeadLetterQueue"]["Properties"]["RedriveAllowPolicy"]
    assert policy["redrivePermission"] == "byQueue"
    assert R["UploadQueue"]["Properties"]["QueueName"]["Fn::Sub"] in policy["sourceQueueArns"][0]["Fn::Sub"]


def test_noncurrent_versions_expire_after_a_parameter():
    rules = {r["Id"]: r for r in R["UploadBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    rule = rules["ExpireNoncurrentVersions"]
    assert "Prefix" not in rule  # the whole bucket
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": "NoncurrentVersionDays"}


def test_archive_staging_leftovers_expire_in_a_day():
    rules = {r["Id"]: r for r in R["UploadBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    staging = rules["ExpireArchiveStaging"]
    assert staging["Prefix"] == "staging/"
    assert staging["ExpirationInDays"] == 1
    assert staging["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1


@pytest.mark.parametrize(
    ("alarm", "metric"),
    [
        ("DeadLetterAlarm", "ApproximateNumberOfMessagesVisible"),
        ("UploadsFailedAlarm", "UploadsFailed"),
        ("OldestUploadAlarm", "ApproximateAgeOfOldestMessage"),
    ],
)
def test_alarms_watch_the_dlq_failed_uploads_and_a_stuck_queue(alarm, metric):
    props = R[alarm]["Properties"]
    assert props["MetricName"] == metric
    assert props["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}


def test_the_failed_uploads_alarm_watches_the_metric_the_flow_emits():
    env = T["Globals"]["Function"]["Environment"]["Variables"]
    props = R["UploadsFailedAlarm"]["Properties"]
    assert props["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert props["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
