"""What template.yaml must guarantee: auth on every route, least privilege, arm64 end to end,
the streaming wiring, queue/DLQ safety, no secret in configuration, and the public contract."""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The public HTTP contract (DESIGN.md): exactly these routes, no more, no fewer.
CONTRACT_ROUTES = {
    ("POST", "/generate"),
    ("POST", "/classify"),
    ("POST", "/ideas"),
    ("POST", "/stream"),
    ("POST", "/jobs"),
    ("GET", "/jobs/{id}"),
    ("GET", "/usage"),
    ("GET", "/admin/usage"),
    ("POST", "/conversations"),
    ("POST", "/conversations/{id}/messages"),
    ("GET", "/conversations/{id}"),
    ("POST", "/conversations/{id}/stream"),
    ("GET", "/openapi.json"),
}
# Public by design: the published OpenAPI document holds no data.
PUBLIC_ROUTES = {("GET", "/openapi.json")}
# Settings fields without a default: the functions fail at cold start without them.
REQUIRED_ENV = {"CLAUDE_SECRET_ID", "TABLE_NAME"}
# Every name the settings model reads, as the template must spell it.
SETTINGS_ENV = {
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "POWERTOOLS_LOG_LEVEL",
    "CLAUDE_SECRET_ID",
    "SECRET_MAX_AGE_SECONDS",
    "MODEL_FAST",
    "MODEL_BALANCED",
    "MODEL_DEEP",
    "MODEL_FALLBACK",
    "MAX_TOKENS_CEILING",
    "MAX_INPUT_CHARS",
    "CACHE_TTL",
    "RATE_LIMIT_PER_MINUTE",
    "DAILY_BUDGET_USD",
    "PLANS",
    "ADMIN_GROUP",
    "USAGE_RETENTION_DAYS",
    "MAX_JOBS_IN_FLIGHT",
    "TABLE_NAME",
    "JOBS_QUEUE_URL",
    "CORS_ALLOW_ORIGIN",
    "PRICING_JSON",
    "WORKER_RECORD_CONCURRENCY",
    "BATCH_POLL_SECONDS",
    "BREAKER_FAILURE_THRESHOLD",
    "BREAKER_RECOVERY_SECONDS",
    "REQUEST_BUDGET_SECONDS",
    "JOB_MAX_AGE_SECONDS",
}
LWA_ENV = {
    "AWS_LAMBDA_EXEC_WRAPPER": "/opt/bootstrap",
    "AWS_LWA_INVOKE_MODE": "response_stream",
    "AWS_LWA_PORT": "8080",
    "AWS_LWA_READINESS_CHECK_PATH": "/healthz",
}
INTRINSICS = {"Ref", "Fn::GetAtt", "Fn::Sub", "Fn::If", "Fn::ImportValue", "Fn::Join", "Fn::Select"}


def prop(fn: dict[str, Any], glob: dict[str, Any], name: str) -> Any:
    """A function property as SAM resolves it: the function's own value, else the global one."""
    return fn.get("Properties", {}).get(name, glob.get(name))


def resolve(template: dict[str, Any], value: Any) -> Any:
    """A literal, or a parameter's default for {"Ref": parameter}."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in template.get("Parameters", {}):
        return template["Parameters"][value["Ref"]].get("Default")
    return value


def api_events(functions: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for fn_name, fn in functions.items():
        for event_name, event in fn.get("Properties", {}).get("Events", {}).items():
            if event["Type"] == "Api":
                yield fn_name, event_name, event["Properties"]


def environment(fn: dict[str, Any], glob: dict[str, Any]) -> dict[str, Any]:
    """Global variables overlaid with the function's own, as SAM merges them."""
    merged = dict(glob.get("Environment", {}).get("Variables", {}))
    merged.update(fn.get("Properties", {}).get("Environment", {}).get("Variables", {}))
    return merged


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# --------------------------------------------------------------------------- API and auth


def test_routes_equal_the_public_contract(functions: dict[str, Any]) -> None:
    routes = {(p["Method"].upper(), p["Path"]) for _, _, p in api_events(functions)}
    assert routes == CONTRACT_ROUTES


def test_every_route_is_on_the_api_and_authorised(resources: dict[str, Any], functions: dict[str, Any]) -> None:
    auth = resources["Api"]["Properties"]["Auth"]
    default = auth["DefaultAuthorizer"]
    assert default in auth["Authorizers"]
    assert "UserPoolArn" in auth["Authorizers"][default], "the default authorizer must be Cognito"
    for fn_name, event_name, props in api_events(functions):
        assert props.get("RestApiId") == {"Ref": "Api"}, f"{fn_name}.{event_name} is not on the Api"
        authorizer = props.get("Auth", {}).get("Authorizer")
        if (props["Method"].upper(), props["Path"]) in PUBLIC_ROUTES:
            assert authorizer == "NONE"
            continue
        assert authorizer in (None, default), f"{fn_name}.{event_name} overrides the authorizer: {authorizer}"
        assert props.get("Auth", {}).get("ApiKeyRequired") is not False


def test_authorizer_uses_existing_pool_or_creates_one(template: dict[str, Any], resources: dict[str, Any]) -> None:
    arn = resources["Api"]["Properties"]["Auth"]["Authorizers"]["CognitoAuthorizer"]["UserPoolArn"]
    assert arn == {"Fn::If": ["CreateUserPool", {"Fn::GetAtt": ["UserPool", "Arn"]}, {"Ref": "ExistingUserPoolArn"}]}
    assert template["Parameters"]["ExistingUserPoolArn"]["Default"] == ""
    for name in ("UserPool", "UserPoolClient"):
        assert resources[name]["Condition"] == "CreateUserPool"
    flows = set(resources["UserPoolClient"]["Properties"]["ExplicitAuthFlows"])
    assert flows == {"ALLOW_USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    assert resources["UserPoolClient"]["Properties"]["GenerateSecret"] is False


def test_throttling_parameters_apply_to_every_method(resources: dict[str, Any]) -> None:
    settings = resources["Api"]["Properties"]["MethodSettings"]
    catch_all = [s for s in settings if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    assert len(catch_all) == 1
    assert catch_all[0]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert catch_all[0]["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}


def test_access_logs_are_json_without_bodies(resources: dict[str, Any]) -> None:
    props = resources["Api"]["Properties"]
    assert props["StageName"] == "v1"
    assert props["TracingEnabled"] is True
    log = props["AccessLogSetting"]
    assert log["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fmt = log["Format"]
    for field in ("$context.requestId", "$context.identity.sourceIp", "$context.authorizer.claims.sub"):
        assert field in fmt
    for field in ("$context.status", "$context.responseLatency", "$context.resourcePath"):
        assert field in fmt
    assert "body" not in fmt.lower()
    assert "$input" not in fmt


# --------------------------------------------------------------------------- streaming


def test_stream_route_streams_through_the_web_adapter(
    template: dict[str, Any], functions: dict[str, Any], global_function: dict[str, Any]
) -> None:
    fn = functions["StreamFunction"]
    events = [p for name, _, p in api_events(functions) if name == "StreamFunction"]
    assert [e["ResponseTransferMode"] for e in events] == ["RESPONSE_STREAM"] * 2  # /stream, a conversation's
    assert fn["Properties"]["Handler"] == "run.sh"
    env = environment(fn, global_function)
    for key, value in LWA_ENV.items():
        assert env.get(key) == value, key
    # SAM appends the function's layers to the global ones: ClaudeLayer + the adapter, once each.
    layers = global_function["Layers"] + fn["Properties"]["Layers"]
    assert {"Ref": "ClaudeLayer"} in layers
    assert layers.count({"Ref": "ClaudeLayer"}) == 1
    # The adapter's own layer matches Architecture: arm64 by default, x86_64 for the CI smoke build.
    (adapter,) = [layer for layer in layers if "LambdaAdapterLayer" in str(layer)]
    condition, override, public = adapter["Fn::If"]
    assert (condition, override) == ("HasLambdaWebAdapterLayerArn", {"Ref": "LambdaWebAdapterLayerArn"})
    pattern, names = public["Fn::Sub"]
    assert names["Cpu"]["Fn::If"][0] == "IsArm64"
    assert template["Conditions"]["IsArm64"] == {"Fn::Equals": [{"Ref": "Architecture"}, "arm64"]}
    for is_arm64, layer_name in ((True, "LambdaAdapterLayerArm64"), (False, "LambdaAdapterLayerX86")):
        cpu = names["Cpu"]["Fn::If"][1 if is_arm64 else 2]
        arn = pattern.replace("${Cpu}", cpu).replace("${LambdaWebAdapterVersion}", "30")
        assert arn.endswith(f":753240598075:layer:{layer_name}:30"), arn


def test_stream_integration_timeout_fits_the_function(
    template: dict[str, Any], functions: dict[str, Any], global_function: dict[str, Any]
) -> None:
    fn = functions["StreamFunction"]
    events = [p for name, _, p in api_events(functions) if name == "StreamFunction"]
    timeout = int(resolve(template, prop(fn, global_function, "Timeout")))
    for event in events:
        assert event["TimeoutInMillis"] <= timeout * 1000
        # The stream's deadline is counted from the request with the same budget as API Gateway's.
        budget = float(fn["Properties"]["Environment"]["Variables"]["STREAM_BUDGET_SECONDS"])
        assert budget * 1000 == event["TimeoutInMillis"]
    assert template["Resources"]["Api"]["Properties"]["EndpointConfiguration"]["Type"] == "REGIONAL"


# API Gateway (REST) cuts a buffered Lambda integration at 29 s, counted from the request.
API_GATEWAY_BUFFERED_LIMIT = 29


def test_buffered_routes_answer_before_api_gateway_cuts_them(
    template: dict[str, Any], functions: dict[str, Any], global_function: dict[str, Any]
) -> None:
    """One parameter sets both each buffered function's Timeout and its deadline's budget, and it
    cannot exceed API Gateway's limit: the function answers (a JSON error included) in time."""
    env = global_function["Environment"]["Variables"]
    assert env["REQUEST_BUDGET_SECONDS"] == {"Ref": "RequestBudgetSeconds"}
    parameter = template["Parameters"]["RequestBudgetSeconds"]
    assert parameter["Default"] <= API_GATEWAY_BUFFERED_LIMIT
    assert parameter["MaxValue"] <= API_GATEWAY_BUFFERED_LIMIT
    buffered = {name for name, _, p in api_events(functions) if p.get("ResponseTransferMode") != "RESPONSE_STREAM"}
    assert buffered
    for name in buffered:
        assert prop(functions[name], global_function, "Timeout") == {"Ref": "RequestBudgetSeconds"}, name
        own_env = functions[name]["Properties"].get("Environment", {}).get("Variables", {})
        assert "REQUEST_BUDGET_SECONDS" not in own_env, name


# --------------------------------------------------------------------------- IAM


def test_no_iam_statement_grants_every_resource(template: dict[str, Any]) -> None:
    for node in walk(template):
        if not isinstance(node, dict) or "Statement" not in node:
            continue
        statements = node["Statement"] if isinstance(node["Statement"], list) else [node["Statement"]]
        for statement in statements:
            resource = statement.get("Resource", [])
            resources = resource if isinstance(resource, list) else [resource]
            assert "*" not in resources, statement


# Item-level access to the one table: no Scan, Query, batch write or table-level operation
# (BatchGetItem reads named items: the circuit state with the model's cooldown, the day's shards).
TABLE_ACTIONS = {
    f"dynamodb:{a}" for a in ("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem")
}
# boto3 method -> the IAM action it needs (a transaction needs the action of each item in it).
DYNAMODB_CALLS = {
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "transact_write_items": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
    "batch_write_item": {"dynamodb:BatchWriteItem"},
    "transact_get_items": {"dynamodb:GetItem"},
    "describe_table": {"dynamodb:DescribeTable"},
}


def state_table_actions(statements: list[Any]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        if statement.get("Resource") == {"Fn::GetAtt": ["StateTable", "Arn"]}:
            actions.update(statement["Action"])
    return actions


def test_table_policy_covers_every_dynamodb_call_in_the_code(root: Path) -> None:
    """Moto does not enforce IAM: a call the policy lacks would pass every local test and fail deployed."""
    needed: set[str] = set()
    for path in [*(root / "layers/claude/claudekit").rglob("*.py"), *(root / "functions").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DYNAMODB_CALLS:
                needed |= DYNAMODB_CALLS[node.func.attr]
    assert needed, "no DynamoDB call found: the scan is broken"
    assert needed <= TABLE_ACTIONS, f"template.yaml must grant {sorted(needed - TABLE_ACTIONS)}"


SQS_POLICY_TEMPLATES = {"SQSSendMessagePolicy", "SQSPollerPolicy"}


def test_functions_share_one_scoped_policy(resources: dict[str, Any], functions: dict[str, Any]) -> None:
    """One managed policy: the key's secret and the table's items, nothing account-wide."""
    policy = resources["FunctionPolicy"]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    secret = [s for s in statements if s["Resource"] == {"Ref": "ApiKeySecret"}]
    assert [s["Action"] for s in secret] == ["secretsmanager:GetSecretValue"]
    assert state_table_actions(statements) == TABLE_ACTIONS
    assert len(statements) == 2, statements
    for name, fn in functions.items():
        policies = fn["Properties"]["Policies"]
        assert {"Ref": "FunctionPolicy"} in policies, name
        for other in policies:
            # SAM policy templates scoped to one resource; never a broad managed policy by name.
            assert isinstance(other, dict), f"{name} uses a managed policy by name: {other}"
            assert other == {"Ref": "FunctionPolicy"} or other.keys() <= SQS_POLICY_TEMPLATES, name
    send = {"SQSSendMessagePolicy": {"QueueName": {"Fn::GetAtt": ["JobsQueue", "QueueName"]}}}
    assert send in functions["JobsFunction"]["Properties"]["Policies"]


def test_every_function_logs_to_a_group_with_retention(
    resources: dict[str, Any], functions: dict[str, Any], global_function: dict[str, Any]
) -> None:
    """Without a group of our own Lambda creates /aws/lambda/<name> and keeps it forever."""
    assert global_function["LoggingConfig"] == {"LogGroup": {"Ref": "FunctionLogGroup"}}
    for name, fn in functions.items():
        assert "LoggingConfig" not in fn["Properties"], name
    group = resources["FunctionLogGroup"]
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert group["DeletionPolicy"] == "Delete"


# --------------------------------------------------------------------------- architecture and code


def test_functions_are_arm64_python313(
    template: dict[str, Any], functions: dict[str, Any], global_function: dict[str, Any]
) -> None:
    # One parameter sets the CPU of everything; arm64 unless a build asks otherwise (CI's smoke build).
    assert template["Parameters"]["Architecture"]["Default"] == "arm64"
    for name, fn in functions.items():
        assert prop(fn, global_function, "Architectures") == [{"Ref": "Architecture"}], name
        assert prop(fn, global_function, "Runtime") == "python3.13", name
        assert prop(fn, global_function, "Tracing") == "Active", name


def test_layer_is_built_for_the_functions_architecture(resources: dict[str, Any]) -> None:
    layer = resources["ClaudeLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"].rstrip("/") == "layers/claude"
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert layer["Metadata"]["BuildArchitecture"] == {"Ref": "Architecture"}
    assert layer["Metadata"]["BuildMethod"] == "python3.13"


def _defines(source: str, symbol: str) -> bool:
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == symbol:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == symbol for t in node.targets):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == symbol:
            return True
    return False


def test_every_handler_exists(root: Path, functions: dict[str, Any], global_function: dict[str, Any]) -> None:
    for name, fn in functions.items():
        code = root / fn["Properties"]["CodeUri"]
        assert code.is_dir(), f"{name}: {code} missing"
        handler = prop(fn, global_function, "Handler")
        if handler.endswith(".sh"):
            script = code / handler
            assert script.is_file(), f"{name}: {script} missing"
            assert os.access(script, os.X_OK), f"{name}: {script} is not executable"
            continue
        module, _, symbol = handler.rpartition(".")
        source = code / (module.replace(".", "/") + ".py")
        assert source.is_file(), f"{name}: {source} missing"
        assert _defines(source.read_text(encoding="utf-8"), symbol), f"{name}: no {symbol} in {source}"


# --------------------------------------------------------------------------- queue and DLQ


def test_queue_visibility_covers_six_worker_timeouts(
    template: dict[str, Any], resources: dict[str, Any], functions: dict[str, Any], global_function: dict[str, Any]
) -> None:
    timeout = int(resolve(template, prop(functions["WorkerFunction"], global_function, "Timeout")))
    visibility = int(resolve(template, resources["JobsQueue"]["Properties"]["VisibilityTimeout"]))
    assert visibility >= 6 * timeout


def test_worker_consumes_the_queue_with_partial_failures(functions: dict[str, Any]) -> None:
    events = functions["WorkerFunction"]["Properties"]["Events"]
    (sqs,) = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert sqs["Queue"] == {"Fn::GetAtt": ["JobsQueue", "Arn"]}
    assert sqs["BatchSize"] == 10
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert sqs["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaxConcurrency"}


def test_dlq_is_encrypted_redriven_to_and_alarmed(resources: dict[str, Any]) -> None:
    queue = resources["JobsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobsDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] == {"Ref": "JobsMaxReceiveCount"}
    for name in ("JobsQueue", "JobsDeadLetterQueue"):
        props = resources[name]["Properties"]
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, name
    assert resources["JobsDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    dlq_alarms = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobsDeadLetterQueue", "QueueName"]}}
        in r["Properties"].get("Dimensions", [])
    ]
    assert len(dlq_alarms) == 1
    assert dlq_alarms[0]["Threshold"] == 0
    assert dlq_alarms[0]["ComparisonOperator"] == "GreaterThanThreshold"


# --------------------------------------------------------------------------- configuration


def _all_environments(
    functions: dict[str, Any], global_function: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, fn in functions.items():
        yield name, environment(fn, global_function)


def test_no_environment_variable_holds_a_secret(functions: dict[str, Any], global_function: dict[str, Any]) -> None:
    for fn_name, env in _all_environments(functions, global_function):
        for key, value in env.items():
            assert not re.search(r"sk-ant-[A-Za-z0-9_-]", json.dumps(value)), f"{fn_name}.{key} holds an API key"
            if any(word in key.upper() for word in ("KEY", "SECRET", "TOKEN", "PASSWORD")):
                message = f"{fn_name}.{key} must be a reference (!Ref/!GetAtt), not a literal"
                assert isinstance(value, dict), message
                assert set(value) <= INTRINSICS, message
    assert environment({}, global_function)["CLAUDE_SECRET_ID"] == {"Ref": "ApiKeySecret"}


def test_secret_resource_holds_no_key(resources: dict[str, Any]) -> None:
    secret = resources["ApiKeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    # The description may show the expected shape ("sk-ant-..."); the value must not be a key.
    assert not re.search(r"sk-ant-[A-Za-z0-9_-]{8,}", json.dumps(secret["Properties"]))


def test_every_function_gets_the_settings_environment(
    functions: dict[str, Any], global_function: dict[str, Any]
) -> None:
    for name, env in _all_environments(functions, global_function):
        assert env.keys() >= REQUIRED_ENV, name
        assert env.keys() >= SETTINGS_ENV, f"{name} misses {sorted(SETTINGS_ENV - env.keys())}"
    env = environment({}, global_function)
    assert env["TABLE_NAME"] == {"Ref": "StateTable"}
    assert env["JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}
    assert env["WORKER_RECORD_CONCURRENCY"] == {"Ref": "WorkerRecordConcurrency"}


def test_environment_names_match_the_settings_model(global_function: dict[str, Any]) -> None:
    """A misspelt variable is silently ignored and its default used: catch it here."""
    settings = pytest.importorskip("claudekit.settings")
    fields = {name.upper() for name in settings.Settings.model_fields}
    env = set(global_function["Environment"]["Variables"])
    powertools_only = {name for name in env if name.startswith("POWERTOOLS_") and name not in fields}
    assert env - powertools_only <= fields, sorted(env - powertools_only - fields)
    required = {name.upper() for name, f in settings.Settings.model_fields.items() if f.is_required()}
    assert required <= env, sorted(required - env)


# --------------------------------------------------------------------------- observability and outputs


def test_alarms_cover_api_lambda_and_app_metrics(resources: dict[str, Any]) -> None:
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    text = json.dumps(alarms)
    assert "5XXError" in text
    assert '"MetricName": "Errors"' in text
    assert "AWS/Lambda" in text
    assert '"MetricName": "Throttles"' in text
    assert "Errors_UPSTREAM_UNAVAILABLE" in text
    assert "CostUSD" in text
    assert {"Ref": "DailyCostAlarmUsd"} in [a.get("Threshold") for a in alarms.values()]
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == {
            "Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]
        }, name


@pytest.mark.parametrize(
    ("alarm", "metric"), [("FunctionErrorsAlarm", "Errors"), ("FunctionThrottlesAlarm", "Throttles")]
)
def test_lambda_alarms_sum_every_function(
    resources: dict[str, Any], functions: dict[str, Any], alarm: str, metric: str
) -> None:
    """A function added to the template and forgotten here would fail unseen."""
    metrics = resources[alarm]["Properties"]["Metrics"]
    (total,) = [m for m in metrics if m.get("ReturnData")]
    stats = [m for m in metrics if "MetricStat" in m]
    watched = {m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for m in stats}
    assert watched == set(functions)
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in stats} == {metric}
    summed = {part.strip() for part in total["Expression"].removeprefix("SUM([").removesuffix("])").split(",")}
    assert summed == {m["Id"] for m in stats}


def test_dashboard_searches_every_function(resources: dict[str, Any], functions: dict[str, Any]) -> None:
    _, variables = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    searched = set(re.findall(r'FunctionName=\\"\$\{(\w+)\}\\"', variables["Functions"]["Fn::Sub"]))
    assert searched == set(functions)


def test_cost_anomaly_alarm_watches_the_hourly_spend_band(resources: dict[str, Any]) -> None:
    """Besides the fixed thresholds: spend per hour above the band CloudWatch learned (issue 14)."""
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    anomaly = [a for a in alarms if "ANOMALY_DETECTION_BAND" in json.dumps(a.get("Metrics", []))]
    assert len(anomaly) == 1
    alarm = anomaly[0]
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    band = metrics[alarm["ThresholdMetricId"]]
    watched = metrics[band["Expression"].split("(")[1].split(",")[0].strip()]
    assert watched["MetricStat"]["Metric"] == {"Namespace": "ClaudeKit", "MetricName": "CostUSD"}
    assert watched["MetricStat"]["Period"] == 3600 and watched["MetricStat"]["Stat"] == "Sum"
    assert alarm["ComparisonOperator"] == "GreaterThanUpperThreshold"
    assert alarm["AlarmActions"] == {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}


def test_dashboard_shows_the_app_metrics(resources: dict[str, Any]) -> None:
    body = json.dumps(resources["Dashboard"]["Properties"]["DashboardBody"])
    for metric in (
        "CostUSD",
        "InputTokens",
        "OutputTokens",
        "CacheReadTokens",
        "CacheWriteTokens",
        "Latency",
        "TimeToFirstToken",
        "Retries",
        "Errors",
        "ApproximateNumberOfMessagesVisible",
        "ConcurrentExecutions",
        "Throttles",
        "Duration",
        "5XXError",
    ):
        assert metric in body, metric


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs.keys() >= {
        "ApiUrl",
        "UserPoolId",
        "UserPoolClientId",
        "ApiKeySecretArn",
        "JobsQueueUrl",
        "JobsDeadLetterQueueUrl",
        "StateTableName",
        "DashboardName",
    }
    assert outputs["ApiUrl"]["Value"] == {"Fn::Sub": "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/v1"}


def test_state_table_shape(resources: dict[str, Any]) -> None:
    props = resources["StateTable"]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_dashboard_body_is_valid_json(resources: dict[str, Any]) -> None:
    """CloudFormation only rejects a malformed body at deploy time: parse it here."""
    body, variables = resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}!]+)\}", body))
    known = set(variables) | set(resources) | {"AWS::StackName", "AWS::Region"}
    assert names <= known, sorted(names - known)
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "placeholder", body))
    assert len(dashboard["widgets"]) >= 10
