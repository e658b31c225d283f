"""What calls cost and what is reserved and charged, through real HTTP (SDK -> upstream, boto3 -> moto).

Some tests use a stand-in upstream instead of the simulator: a tiny Messages API that reports one
token per UTF-8 byte of everything sent (plus the per-message overhead), answers with all of
max_tokens, and can report usage it is told to: the worst case the reservation must cover.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from claudekit import errors
from claudekit.claude.client import ClaudeClient, reset_client
from claudekit.claude.request import MESSAGE_OVERHEAD_TOKENS, ClaudeRequest, ClaudeResult, Delta
from claudekit.deadline import Deadline
from claudekit.errors import ConfigurationError
from claudekit.settings import Settings
from claudekit.store.ledger import Ledger
from local.lambda_context import LambdaContext
from local.simulator import Fault, Latency, Simulator
from tests.conftest import emf_records, metric_values

ROOT = Path(__file__).resolve().parents[2]

# ---- a stand-in upstream: one token per byte -----------------------------------------------------


def _bytes(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return len(text.encode("utf-8"))


def tokens_per_byte(body: dict[str, Any]) -> int:
    """Input tokens at one per byte of each message, the system prompt and the schema, plus overhead."""
    pieces = [_bytes(m["content"]) for m in body["messages"]]
    pieces += [_bytes(block["text"]) for block in body.get("system") or []]
    output_format = (body.get("output_config") or {}).get("format")
    if output_format:
        pieces.append(_bytes(output_format["schema"]))
    return sum(pieces) + MESSAGE_OVERHEAD_TOKENS * len(pieces)


class StandIn:
    """Answers every POST /v1/messages with max_tokens "x"s, usage one token per byte (or `usage`)."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.calls = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                standin.calls += 1
                usage = standin.usage or {"input_tokens": tokens_per_byte(body), "output_tokens": body["max_tokens"]}
                reply = {
                    "id": f"msg_{standin.calls}",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [{"type": "text", "text": "x" * body["max_tokens"]}],
                    "stop_reason": "max_tokens",
                    "stop_sequence": None,
                    "usage": usage,
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", f"req_{standin.calls}")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def user() -> str:
    """A fresh user per test: moto lives for the whole session."""
    return f"user-{uuid.uuid4()}"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


def generate(user: str, prompt: str, max_tokens: int = 1000, **kw: Any) -> ClaudeRequest:
    return ClaudeRequest(feature="generate", task="generate", user_id=user, prompt=prompt, max_tokens=max_tokens, **kw)


def outcome(client: ClaudeClient, request: ClaudeRequest) -> str:
    try:
        client.complete(request, Deadline.after(20))
        return "ok"
    except errors.ClaudeError as exc:
        return exc.code


# ---- budgets hold whatever the text (issue 10) ---------------------------------------------------

EMOJI = "\U0001f600" * 2000  # 2,000 characters, 8,000 UTF-8 bytes: far denser than 1 token per 4 characters
# Sonnet 5.5 ($2 in / $10 out): (8,000 + 16) x 2 + 1,000 x 10 = 26,032 per million
EMOJI_COST = Decimal("0.026032")


def test_concurrent_dense_text_cannot_overrun_the_daily_budget(make_client: Any, standin: StandIn, user: str) -> None:
    client: ClaudeClient = make_client(anthropic_base_url=standin.url, daily_budget_usd=0.1)
    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(lambda _: outcome(client, generate(user, EMOJI)), range(12)))

    served = outcomes.count("ok")
    assert served >= 1 and set(outcomes) <= {"ok", "BUDGET_EXCEEDED"}
    report = client.ledger.report(user)
    # Every served call really cost its reservation (the stand-in reports the worst case), and still
    # the day's total stays within the budget: at most three fit in 0.10 USD.
    assert Decimal(str(report["cost_usd"])) == EMOJI_COST * served
    assert Decimal(str(report["cost_usd"])) <= Decimal("0.1")
    assert served <= 3 and standin.calls == served
    assert report["remaining"]["budget_usd"] >= 0


@pytest.mark.parametrize(
    ("feature", "task", "lower"),
    [
        ("generate", "generate", "lower max_tokens or the input size"),
        ("stream", "generate", "lower max_tokens or the input size"),
        ("classify", "classify", "lower the input size"),
        ("ideas", "ideas", "lower the input size"),
        ("jobs", "generate", "lower the input size"),
    ],
)
def test_a_request_that_can_never_fit_is_refused_for_good(
    make_client: Any, standin: StandIn, feature: str, task: str, lower: str
) -> None:
    # Even the cheapest (/classify on Haiku: 8,016 x 0.1 + 64 x 0.5 per million) exceeds 0.0005 USD.
    client: ClaudeClient = make_client(anthropic_base_url=standin.url, daily_budget_usd=0.0005)
    user = f"big-{uuid.uuid4()}"
    request = ClaudeRequest(feature=feature, task=task, user_id=user, prompt=EMOJI)
    with pytest.raises(errors.CostExceedsBudget) as caught:
        client.complete(request, Deadline.after(20))

    exc = caught.value
    assert (exc.status, exc.code, exc.retryable, exc.retry_after) == (422, "COST_EXCEEDS_BUDGET", False, None)
    assert exc.message.endswith(lower)
    assert standin.calls == 0
    # Nothing was counted: a smaller request from the same user goes through at once.
    assert client.ledger.report(user)["remaining"]["requests_this_minute"] == client.ledger.rate_per_minute
    assert outcome(client, generate(user, "Hi", max_tokens=10)) == "ok"


def test_generate_route_answers_422_without_retry_after(
    settings_env: dict[str, str], standin: StandIn, monkeypatch: Any, user: str
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", standin.url)
    monkeypatch.setenv("DAILY_BUDGET_USD", "0.02")
    reset_client()
    event = json.loads((ROOT / "events" / "generate.json").read_text())
    event["body"] = json.dumps({"prompt": EMOJI, "max_tokens": 1000})
    event["requestContext"]["authorizer"]["claims"]["sub"] = user
    from functions.generate import app as generate_app

    response = generate_app.handler(
        event,
        LambdaContext("GenerateFunction"),
    )
    assert response["statusCode"] == 422
    assert "Retry-After" not in (response.get("headers") or {})
    error = json.loads(response["body"])["error"]
    assert error["code"] == "COST_EXCEEDS_BUDGET" and "max_tokens" in error["message"]


# ---- upstream usage is validated (issue 11) -------------------------------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 10, "output_tokens": -500},
        {"input_tokens": 10, "output_tokens": 1.5},
        {"input_tokens": 10, "output_tokens": 10**12},
        {"input_tokens": "10", "output_tokens": 5},
    ],
)
def test_implausible_upstream_usage_is_a_retryable_upstream_error(
    make_client: Any, standin: StandIn, usage: dict[str, Any], user: str
) -> None:
    client: ClaudeClient = make_client(anthropic_base_url=standin.url, retry_max_attempts=2, model_fallback="")
    standin.usage = usage
    with pytest.raises(errors.UpstreamMalformed) as caught:
        client.complete(generate(user, "Hi"), Deadline.after(20))

    assert caught.value.code == "UPSTREAM_ERROR" and caught.value.retryable
    assert standin.calls == 2  # retried like any malformed reply
    report = client.ledger.report(user)
    assert report["cost_usd"] == 0 and report["remaining"]["budget_usd"] == report["limits"]["daily_budget_usd"]
    standin.usage = None  # the next healthy answer goes through
    assert outcome(client, generate(user, "Hi", max_tokens=10)) == "ok"


# ---- a paid answer is always delivered (issue 11) -------------------------------------------------


class UnwritableLedger(Ledger):
    """The real ledger, except that recording usage fails (DynamoDB throttled or down)."""

    settle_calls = 0

    def settle(self, *args: Any, **kwargs: Any) -> None:
        type(self).settle_calls += 1
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")


class LostAnswerLedger(Ledger):
    """The real ledger, except that the first settlement's answer is lost (a timeout after
    DynamoDB may have written it)."""

    tokens: list[str | None] = []

    def settle(self, *args: Any, token: str | None = None, **kwargs: Any) -> bool:
        type(self).tokens.append(token)
        if len(type(self).tokens) == 1:
            raise ClientError({"Error": {"Code": "InternalServerError"}}, "TransactWriteItems")
        return super().settle(*args, token=token, **kwargs)


def test_every_attempt_of_a_settlement_carries_one_token(
    settings_env: dict[str, str], sim: Simulator, user: str
) -> None:
    """DynamoDB applies a transaction once per ClientRequestToken: a retried settlement whose
    first answer was lost must send the same token, or the call would be counted twice."""
    settings = Settings()  # type: ignore[call-arg]
    ledger = LostAnswerLedger(settings.table_name, rate_per_minute=100, daily_budget_usd=1.0)
    LostAnswerLedger.tokens = []

    ClaudeClient(settings, ledger=ledger).complete(generate(user, "Explain tokens.", max_tokens=50), Deadline.after(20))

    first, second = LostAnswerLedger.tokens
    assert first and first == second and len(first) <= 35  # room for the ledger's one-letter suffix
    assert ledger.report(user)["requests"] == 1


def test_an_answer_whose_usage_cannot_be_recorded_is_still_delivered(
    settings_env: dict[str, str], sim: Simulator, capsys: Any, caplog: pytest.LogCaptureFixture, user: str
) -> None:
    settings = Settings()  # type: ignore[call-arg]
    ledger = UnwritableLedger(settings.table_name, rate_per_minute=100, daily_budget_usd=1.0)
    client = ClaudeClient(settings, ledger=ledger)

    result = client.complete(generate(user, "Explain retries.", max_tokens=200), Deadline.after(20))

    assert result.text and result.cost_usd > 0
    assert UnwritableLedger.settle_calls == 3  # retried before giving up
    out = capsys.readouterr().out
    assert metric_values(out, "UsageNotRecorded") == [1]
    [record] = [r for r in caplog.records if r.getMessage() == "usage not recorded; reconcile it"]
    line: dict[str, Any] = record.__dict__
    assert record.levelname == "ERROR" and line["upstream_request_id"] == result.request_id
    assert line["usage"] == result.usage.public() and Decimal(line["cost_usd"]) == result.cost_usd
    assert "Explain retries." not in json.dumps(line, default=str)  # the log line carries no prompt
    # The reservation stays held until someone reconciles it.
    report = ledger.report(user)
    assert report["remaining"]["budget_usd"] == pytest.approx(1.0 - float(line["reserved_usd"]))


# ---- streams are billed for what they produced (issue 11) -----------------------------------------


def stream_until(client: ClaudeClient, request: ClaudeRequest, deltas: int) -> tuple[str, ClaudeResult | None]:
    """Read `deltas` pieces, then leave as a disconnecting caller does (closing the generator)."""
    text = ""
    stream = client.stream(request, Deadline.after(20))
    try:
        for piece in stream:
            if isinstance(piece, Delta):
                text += piece.text
                deltas -= 1
                if deltas == 0:
                    break
            else:
                return text, piece
    finally:
        stream.close()
    return text, None


@pytest.mark.parametrize("leave_after", [1, 5, 40, 99, 100])
def test_a_stream_cut_by_the_caller_is_billed_at_least_what_it_delivered(
    client: ClaudeClient, sim: Simulator, capsys: Any, leave_after: int, user: str
) -> None:
    sim.configure(reply_tokens=400)  # 100 deltas of ~4 tokens
    text, done = stream_until(client, generate(user, "Tell me a long story.", max_tokens=1000), leave_after)

    assert done is None and text
    record = next(r for r in emf_records(capsys.readouterr().out) if "OutputTokens" in r)
    billed = record["OutputTokens"][0]
    # Never fewer tokens than the delivered text could hold (one per byte, and the model stops at
    # max_tokens), whatever was reported; never more than max_tokens.
    assert min(len(text.encode()), 1000) <= billed <= 1000
    report = client.ledger.report(user)
    assert report["usage"]["output_tokens"] == billed
    assert report["usage"]["input_tokens"] > 0
    # Priced like any Sonnet call: input x2 + output x10 per million.
    expected = (Decimal(report["usage"]["input_tokens"]) * 2 + Decimal(billed) * 10) / Decimal(1_000_000)
    assert Decimal(str(report["cost_usd"])) == expected


def test_a_finished_stream_is_billed_exactly_as_reported(client: ClaudeClient, sim: Simulator, user: str) -> None:
    sim.configure(reply_tokens=400)
    _, done = stream_until(client, generate(user, "Tell me a long story.", max_tokens=1000), 10**6)

    assert done is not None and done.usage.output_tokens == 400
    # Sonnet: input x2 + 400 x 10 per million, the same figure a plain call reports.
    assert done.cost_usd == (Decimal(done.usage.input_tokens) * 2 + 4000) / Decimal(1_000_000)


def test_an_upstream_error_mid_stream_bills_what_was_received(
    client: ClaudeClient, sim: Simulator, capsys: Any, user: str
) -> None:
    sim.configure(reply_tokens=400)
    sim.script(Fault.stream_error(after_deltas=30))
    text = ""
    with pytest.raises(errors.UpstreamUnavailable):
        for piece in client.stream(generate(user, "Tell me a long story.", max_tokens=1000), Deadline.after(20)):
            if isinstance(piece, Delta):
                text += piece.text

    report = client.ledger.report(user)
    assert report["requests"] == 1 and report["usage"]["output_tokens"] >= len(text.encode()) > 0
    assert metric_values(capsys.readouterr().out, "OutputTokens") == [report["usage"]["output_tokens"]]


def test_the_deadline_cutting_a_stream_bills_what_was_received(make_client: Any, sim: Simulator, user: str) -> None:
    client: ClaudeClient = make_client()
    sim.configure(reply_tokens=400, latency=Latency(tokens_per_second=100))  # ~4 s if left alone
    text = ""
    with pytest.raises(errors.UpstreamTimeout):
        for piece in client.stream(generate(user, "Tell me a long story.", max_tokens=1000), Deadline.after(1.2)):
            if isinstance(piece, Delta):
                text += piece.text

    report = client.ledger.report(user)
    assert report["requests"] == 1 and report["usage"]["output_tokens"] >= len(text.encode()) > 0


# ---- what caching and routing saved, per user and per feature (issue 9) ---------------------------


def test_usage_report_says_what_caching_and_routing_saved(client: ClaudeClient, sim: Simulator, user: str) -> None:
    system = "You are a meticulous assistant. " * 200  # ~6,400 characters: cached on Sonnet
    first = client.complete(generate(user, "Hi", system=system), Deadline.after(20))
    second = client.complete(generate(user, "Hi again", system=system), Deadline.after(20))
    summary = client.complete(
        ClaudeRequest(feature="summary", task="summarize", user_id=user, prompt="Summarize: retries help."),
        Deadline.after(20),
    )
    assert second.usage.cache_read_input_tokens > 0 and summary.model == "claude-haiku-5-5"

    report = client.ledger.report(user)
    generate_row, summary_row = report["features"]["generate"], report["features"]["summary"]
    assert generate_row["requests"] == 2 and summary_row["requests"] == 1

    def plain(result: ClaudeResult, input_rate: int, output_rate: int) -> Decimal:
        return (Decimal(result.usage.prompt_tokens * input_rate + result.usage.output_tokens * output_rate)) / Decimal(
            1_000_000
        )

    # Without caching: every prompt token of both generate calls as plain Sonnet input ($2, $10 out).
    assert Decimal(str(generate_row["without_caching_usd"])) == plain(first, 2, 10) + plain(second, 2, 10)
    assert generate_row["without_caching_usd"] > generate_row["cost_usd"]
    # Routing moved the summary to Haiku; on Sonnet (the balanced model) it would have cost 20x as much.
    assert Decimal(str(summary_row["without_routing_usd"])) == plain(summary, 2, 10)
    assert summary_row["without_routing_usd"] == pytest.approx(summary_row["cost_usd"] * 20)
    assert report["without_routing_usd"] == pytest.approx(
        generate_row["without_routing_usd"] + summary_row["without_routing_usd"]
    )


# ---- prices at init ------------------------------------------------------------------------------


def test_a_model_without_a_price_fails_at_init_naming_it(make_client: Any) -> None:
    with pytest.raises(ConfigurationError, match="claude-opus-9-9"):
        make_client(model_deep="claude-opus-9-9")
