"""template.yaml decisions a reviewer would check by hand: security, limits, and local/AWS parity."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devstack.template import load
from relay.flows.attachments_api import openapi_document

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
    assert {c["Filter"]["S3Key"]["Rules"][0]["Value"] for c in configs} == {"issues/", "forms/", "rfis/"}
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


def test_the_transfers_table_the_users_record_is_recoverable_to_any_point():
    assert R["TransfersTable"]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def _resolver(**parameters: str) -> Any:
    from devstack.template import Resolver

    pseudo = {"AWS::Region": "us-east-1", "AWS::AccountId": "1", "AWS::StackName": "s", "AWS::Partition": "aws"}
    defaults = Resolver(T, parameters={}, pseudo=pseudo).param_defaults()
    resolver = Resolver(T, parameters={**defaults, **parameters}, pseudo=pseudo)
    resolver.refs["UploadBucket"] = "s-uploads-1"
    resolver.refs["AccessLogBucket"] = "s-accesslogbucket-abc"
    resolver.attrs[("AccessLogBucket", "Arn")] = "arn:aws:s3:::s-accesslogbucket-abc"
    return resolver


def test_uploads_are_access_logged_to_a_bucket_the_stack_keeps():
    resolver = _resolver()
    logging = resolver.resolve(R["UploadBucket"]["Properties"]["LoggingConfiguration"])
    assert logging == {"DestinationBucketName": "s-accesslogbucket-abc", "LogFilePrefix": "s/uploads/"}
    assert "AccessLogBucket" in resolver.resources("AWS::S3::Bucket")
    # The audit trail outlives the stack, and has no fixed name that a new stack of the same name would collide with.
    log_bucket = R["AccessLogBucket"]
    assert log_bucket["DeletionPolicy"] == log_bucket["UpdateReplacePolicy"] == "Retain"
    assert "BucketName" not in log_bucket["Properties"]
    assert all(log_bucket["Properties"]["PublicAccessBlockConfiguration"].values())
    # S3 server access logs are delivered only to SSE-S3 buckets.
    (rule,) = log_bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (expiry,) = log_bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    assert expiry["ExpirationInDays"] == {"Ref": "AccessLogRetentionDays"}
    allow, deny = resolver.resolve(R["AccessLogBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"])
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert allow["Action"] == "s3:PutObject"
    assert allow["Resource"] == "arn:aws:s3:::s-accesslogbucket-abc/s/uploads/*"
    assert allow["Condition"]["ArnLike"]["aws:SourceArn"] == "arn:aws:s3:::s-uploads-1"
    assert allow["Condition"]["StringEquals"]["aws:SourceAccount"] == "1"
    assert deny["Effect"] == "Deny"
    assert deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    assert resolver.resolve(T["Outputs"]["AccessLogBucketName"]["Value"]) == "s-accesslogbucket-abc"


def test_a_given_access_log_bucket_receives_the_logs_and_the_stack_creates_none():
    resolver = _resolver(AccessLogBucketName="central-access-logs")
    logging = resolver.resolve(R["UploadBucket"]["Properties"]["LoggingConfiguration"])
    assert logging["DestinationBucketName"] == "central-access-logs"
    assert "AccessLogBucket" not in resolver.resources("AWS::S3::Bucket")
    assert "AccessLogBucketPolicy" not in resolver.resources("AWS::S3::BucketPolicy")
    assert resolver.resolve(T["Outputs"]["AccessLogBucketName"]["Value"]) == "central-access-logs"


def test_every_checkov_skip_sits_in_a_resource_and_says_why():
    from devstack.template import TEMPLATE

    resource, in_resources, skips = None, False, []
    for line in TEMPLATE.read_text(encoding="utf-8").splitlines():
        if re.match(r"^[A-Za-z]", line):
            in_resources = line == "Resources:"
        elif in_resources and (header := re.match(r"^  ([A-Za-z0-9]+):$", line)):
            resource = header.group(1)
        if "checkov:skip" in line:
            skip = re.fullmatch(r"    # checkov:skip=(CKV2?_AWS_\d+): (\S.{30,})", line)
            assert skip, f"a checkov skip without a check id or a reason: {line.strip()!r}"
            assert in_resources, f"{skip.group(1)} is outside Resources"
            assert resource in R, f"{skip.group(1)} is not beside a resource"
            skips.append((resource, skip.group(1)))
    assert len(skips) == len(set(skips)), "a check is skipped twice for one resource"
    assert ("UploadBucket", "CKV_AWS_18") not in skips, "the upload bucket's access logging is real, never skipped"
    assert ("TransfersTable", "CKV_AWS_28") not in skips, "the transfers table is the users' record: PITR stays on"


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
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == {"Ref": "NoncurrentVersionDays"}
    assert rules["ExpireArchiveStaging"]["Prefix"] == "staging/"  # a crashed copy's staged bytes go in a day


# -- the attachments API and the archive ---------------------------------------------------------------


def _api_events() -> dict[str, dict[str, Any]]:
    return {
        name: event["Properties"]
        for res in R.values()
        if res["Type"] == "AWS::Serverless::Function"
        for name, event in res["Properties"].get("Events", {}).items()
        if event["Type"] == "Api"
    }


def test_the_api_is_never_open_every_route_takes_the_iam_authoriser():
    props = R["AttachmentsApi"]["Properties"]
    assert props["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    events = _api_events()
    assert len(events) == 9
    opened = {name: e for name, e in events.items() if "Auth" in e}
    # The only route that opts out of IAM: iTwin's signed webhook, checked by its HMAC signature.
    assert list(opened) == ["ItwinWebhook"], "no other route may opt out of IAM"
    hook = opened["ItwinWebhook"]
    assert hook["Auth"] == {"Authorizer": "NONE"}
    assert (hook["Path"], hook["Method"]) == ("/webhooks/itwin", "post")


def test_the_api_routes_are_the_resolvers_routes():
    documented = set(json.loads(openapi_document())["paths"])
    routed = {e["Path"] for e in _api_events().values()}
    assert routed == documented | {"/openapi.json"}


def test_the_api_stage_logs_access_and_throttles_from_parameters():
    props = R["AttachmentsApi"]["Properties"]
    assert props["AccessLogSetting"]["DestinationArn"] == {"Fn::GetAtt": ["AttachmentsApiAccessLogGroup", "Arn"]}
    stage, webhook = props["MethodSettings"]
    assert (stage["ResourcePath"], stage["HttpMethod"]) == ("/*", "*")
    assert stage["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert stage["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    # The open route (API Gateway writes its path with ~1 for each /) is limited on its own.
    assert (webhook["ResourcePath"], webhook["HttpMethod"]) == ("/~1webhooks~1itwin", "POST")
    assert webhook["ThrottlingRateLimit"] == {"Ref": "WebhookThrottlingRateLimit"}
    assert webhook["ThrottlingBurstLimit"] == {"Ref": "WebhookThrottlingBurstLimit"}


def test_the_archive_queue_has_a_dlq_with_an_alarm_and_the_outputs_name_the_api():
    assert R["ArchiveQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["ArchiveDeadLetterQueue", "Arn"]
    }
    dims = R["ArchiveDeadLetterAlarm"]["Properties"]["Dimensions"]
    assert dims == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ArchiveDeadLetterQueue", "QueueName"]}}]
    outputs = T["Outputs"]
    assert "/v1/openapi.json" in outputs["OpenApiUrl"]["Value"]["Fn::Sub"]
    assert outputs["AttachmentsApiUrl"]["Value"]["Fn::Sub"].endswith("/v1")


@pytest.mark.parametrize("role", ["AttachmentsApiRole", "ArchiveRole", "ItwinWebhooksRole"])
def test_the_archive_roles_reach_only_archive_and_staging_in_the_bucket(role):
    statements = R[role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    for statement in statements:
        resource = statement["Resource"]
        if statement["Sid"] == "Tracing":
            continue
        assert resource != "*", statement["Sid"]
        text = json.dumps(resource)
        if "uploads-" in text and "s3:ListBucket" not in json.dumps(statement["Action"]):
            assert text.endswith('/archive/*"}') or text.endswith('/staging/*"}'), statement["Sid"]


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


# -- APS user tokens -----------------------------------------------------------------------------------


def test_only_the_refresher_may_write_the_aps_secret():
    writers = {
        role: statement
        for role in of_type("AWS::IAM::Role")
        for statement in statements(role)
        for actions in [[statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]]
        if any(a == "*" or (a.startswith("secretsmanager:") and a != "secretsmanager:GetSecretValue") for a in actions)
    }
    assert list(writers) == ["ApsTokenRefresherRole"]
    assert set(writers["ApsTokenRefresherRole"]["Action"]) == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
    }
    # This stack's secret, or the one another stack holds (ApsSecretArn): never any other.
    assert writers["ApsTokenRefresherRole"]["Resource"] == {
        "Fn::If": ["CreateApsSecret", {"Ref": "ApsSecret"}, {"Ref": "ApsSecretArn"}]
    }
    function_policies = [f["Properties"].get("Policies") for f in of_type("AWS::Serverless::Function").values()]
    assert function_policies == [None] * len(function_policies)  # no SAM policy template adds a writer


def test_the_refresher_runs_alone_on_a_schedule_with_its_margin():
    props = R["ApsTokenRefresherFunction"]["Properties"]
    assert props["ReservedConcurrentExecutions"] == 1
    assert props["Events"]["Every"]["Properties"]["Schedule"] == {
        "Fn::Sub": "rate(${ApsRefreshScheduleMinutes} minutes)"
    }
    assert T["Parameters"]["ApsRefreshScheduleMinutes"]["Default"] == 10
    assert T["Parameters"]["ApsRefreshMarginMinutes"]["Default"] == 20
    assert T["Parameters"]["ApsRefreshTokenWarnDays"]["Default"] == 13
    env = props["Environment"]["Variables"]
    # Stacks on the same APS secret share one lease table (SharedTokenLeaseTable): one writer across them.
    assert env["RELAY_TOKEN_LEASE_TABLE"] == {
        "Fn::If": ["CreateTokenLeaseTable", {"Ref": "TokenLeaseTable"}, {"Ref": "SharedTokenLeaseTable"}]
    }
    assert R["TokenLeaseTable"]["Condition"] == "CreateTokenLeaseTable"
    assert R["ApsSecret"]["Condition"] == "CreateApsSecret"
    assert env["RELAY_APS_REFRESH_MARGIN_MINUTES"] == {"Ref": "ApsRefreshMarginMinutes"}
    from relay import constants as c

    assert props["Timeout"] < c.TOKEN_LEASE_SECONDS  # a live run always holds its lease
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 0


@pytest.mark.parametrize(
    ("alarm", "namespace", "metric"),
    [
        ("ApsTokenRefresherErrorsAlarm", "AWS/Lambda", "Errors"),
        ("ApsLoginRequiredAlarm", "AttachmentRelay", "ApsLoginRequired"),
        ("ApsRefreshTokenAgingAlarm", "AttachmentRelay", "ApsRefreshTokenAging"),
        ("ApsTokenRefresherStoppedAlarm", "AWS/Lambda", "Invocations"),
    ],
)
def test_token_alarms(alarm, namespace, metric):
    props = R[alarm]["Properties"]
    assert (props["Namespace"], props["MetricName"]) == (namespace, metric)
    assert props["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    if namespace == "AWS/Lambda":
        assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ApsTokenRefresherFunction"}}]
    else:
        assert props["Dimensions"] == [{"Name": "service", "Value": "attachment-relay"}]
    assert "aps-login" in R["ApsLoginRequiredAlarm"]["Properties"]["AlarmDescription"]
    stopped = R["ApsTokenRefresherStoppedAlarm"]["Properties"]  # no runs at all is an alarm, not silence
    assert (stopped["ComparisonOperator"], stopped["Threshold"], stopped["TreatMissingData"]) == (
        "LessThanThreshold",
        1,
        "breaching",
    )


def test_a_second_stack_on_the_same_aps_secret_creates_neither_the_secret_nor_the_lease_table():
    from devstack.template import Resolver

    pseudo = {"AWS::Region": "us-east-1", "AWS::AccountId": "1", "AWS::StackName": "s", "AWS::Partition": "aws"}
    shared = {
        "ApsSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:first/aps-AbCdEf",
        "SharedTokenLeaseTable": "t",
    }
    defaults = Resolver(T, parameters={}, pseudo=pseudo).param_defaults()
    alone = Resolver(T, parameters=defaults, pseudo=pseudo)
    second = Resolver(T, parameters={**defaults, **shared}, pseudo=pseudo)
    assert {"ApsSecret", "TokenLeaseTable"} <= set(alone.resources("AWS::SecretsManager::Secret")) | set(
        alone.resources("AWS::DynamoDB::Table")
    )
    assert "ApsSecret" not in second.resources("AWS::SecretsManager::Secret")
    assert "TokenLeaseTable" not in second.resources("AWS::DynamoDB::Table")
    env = second.resolve(R["ApsTokenRefresherFunction"]["Properties"]["Environment"]["Variables"])
    assert env["RELAY_TOKEN_LEASE_TABLE"] == "t"
    assert (
        second.resolve(
            R["ApsTokenRefresherRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][1]["Resource"]
        )
        == shared["ApsSecretArn"]
    )


# -- S3 → RFI ---------------------------------------------------------------------------------------


def test_rfi_uploads_have_their_own_queue_dlq_alarm_and_function():
    configs = R["UploadBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    (rfis,) = [c for c in configs if c["Filter"]["S3Key"]["Rules"][0]["Value"] == "rfis/"]
    assert rfis["Queue"] == {"Fn::GetAtt": ["RfiUploadQueue", "Arn"]}
    queue = R["RfiUploadQueue"]["Properties"]
    function = R["S3ToRfiFunction"]["Properties"]
    assert int(queue["VisibilityTimeout"]) >= 6 * int(function["Timeout"])
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["RfiUploadDeadLetterQueue", "Arn"]}
    alarm = R["RfiDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["RfiUploadDeadLetterQueue", "QueueName"]}
    event = function["Events"]["RfiUploads"]["Properties"]
    assert event["Queue"] == {"Fn::GetAtt": ["RfiUploadQueue", "Arn"]}
    assert event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "RfiMaximumConcurrency"}
    assert "S3ToRfiFunctionArn" in T["Outputs"]


def test_the_rfi_role_reads_only_rfis_and_the_aps_secret_and_never_writes_it():
    rfi = statements("S3ToRfiRole")
    (objects,) = [s for s in rfi if "s3:GetObject" in s["Action"]]
    assert objects["Resource"]["Fn::Sub"].endswith("/rfis/*")
    (listing,) = [s for s in rfi if "s3:ListBucket" in s["Action"]]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["rfis/*"]

    def actions(s: dict[str, Any]) -> list[str]:
        return s["Action"] if isinstance(s["Action"], list) else [s["Action"]]

    secrets = [s for s in rfi if any(a.startswith("secretsmanager:") for a in actions(s))]
    assert [s["Resource"] for s in secrets] == [
        {"Fn::If": ["CreateApsSecret", {"Ref": "ApsSecret"}, {"Ref": "ApsSecretArn"}]}
    ]
    assert {a for s in secrets for a in actions(s)} == {"secretsmanager:GetSecretValue"}


def test_the_rfi_function_reads_its_settings_from_parameters():
    from relay import constants as c

    env = R["S3ToRfiFunction"]["Properties"]["Environment"]["Variables"]
    for name in (c.APS_HUB_ID_ENV, c.APS_FOLDER_ENV, c.APS_MAX_UPLOAD_BYTES_ENV, c.APS_PART_BYTES_ENV):
        assert name in env
    assert T["Parameters"]["ApsMaxUploadBytes"]["Default"] == c.DEFAULT_APS_MAX_UPLOAD_BYTES
    assert T["Parameters"]["ApsPartBytes"]["MinValue"] == c.MIN_APS_PART_BYTES
