"""Every feature as a job: each kind runs the feature's own task and answers in its route's shape.

Realtime jobs call the task as the route does (one repair turn for structured output included),
and hand their answer to the settlement of the call that produced it (`run`'s `ride`), so the
job's result is written in the same transaction as its cost.
Message Batches jobs send the same request (`batch_request`) and read the answer with the same
checks (`batch_answer`); a batch has no repair turn, so an invalid structured answer fails the job
with UPSTREAM_ERROR (it was billed, so it is charged).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from pydantic import BaseModel

from claudekit.claude.accounting import Rider, riding
from claudekit.claude.client import ClaudeClient
from claudekit.claude.request import ClaudeRequest, ClaudeResult
from claudekit.deadline import Deadline
from claudekit.errors import StructuredOutputError
from claudekit.tasks import classify, generate, ideas, structured
from claudekit.tasks.classify import ClassifyBody, ClassifyOut
from claudekit.tasks.generate import GenerateOut
from claudekit.tasks.ideas import IdeasBody, IdeasOut
from claudekit.tasks.jobs.models import ClassifyJob, GenerateJob, IdeasJob
from claudekit.tasks.models import UsageOut

Item = GenerateJob | ClassifyJob | IdeasJob


def _shared(result: ClaudeResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "usage": UsageOut(**result.usage.public()),
        "cost_usd": float(result.cost_usd),
    }


def generate_out(result: ClaudeResult) -> dict[str, Any]:
    """POST /generate's body; `request_id` names an HTTP request, and a job has none."""
    out = GenerateOut(
        text=result.text, stop_reason=result.stop_reason, truncated=result.truncated, request_id=None, **_shared(result)
    )
    return out.model_dump(mode="json")


def classify_out(label: str, result: ClaudeResult) -> dict[str, Any]:
    return ClassifyOut(label=label, **_shared(result)).model_dump(mode="json")


def ideas_out(found: list[Any], result: ClaudeResult) -> dict[str, Any]:
    return IdeasOut(ideas=found, **_shared(result)).model_dump(mode="json")


def run(
    client: ClaudeClient,
    item: Item,
    user: str,
    deadline: Deadline,
    *,
    feature: str,
    max_retry_wait: float,
    ride: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> tuple[dict[str, Any], bool]:
    """One realtime job: the feature's task, its result as the route answers it, and whether that
    result was written with the call's settlement.

    `ride(answer)` gives the writes that record `answer` (the job's result and status); they go in
    the settlement's transaction when the first call's answer is final. A structured answer that
    needed a repair turn sums two calls, so it is returned unwritten, for the caller to write.
    """
    answer: Callable[[ClaudeResult], dict[str, Any]]
    call: Callable[[], dict[str, Any]]
    if isinstance(item, ClassifyJob):
        body = item.input
        request, output = classify.classify_request(body, user, feature, max_retry_wait)

        def classified(parsed: BaseModel, result: ClaudeResult) -> dict[str, Any]:
            return classify_out(classify.classify_answer(body, parsed), result)

        answer = partial(_structured, classified, output)
        call = partial(_complete_structured, classified, client, request, output, deadline)
    elif isinstance(item, IdeasJob):
        request, output = ideas.ideas_request(item.input, user, feature, max_retry_wait)

        def found(parsed: BaseModel, result: ClaudeResult) -> dict[str, Any]:
            return ideas_out(ideas.ideas_answer(parsed), result)

        answer = partial(_structured, found, output)
        call = partial(_complete_structured, found, client, request, output, deadline)
    else:
        request = generate.generate_request(item.body(), user, feature, max_retry_wait)
        answer = generate_out
        call = partial(_complete, client, request, deadline)
    settled = 0

    def items(result: ClaudeResult) -> list[dict[str, Any]]:
        nonlocal settled
        settled += 1
        if settled > 1:  # a repair turn: the answer will sum both calls
            return []
        try:
            return ride(answer(result))
        except StructuredOutputError:  # not final: a repair turn follows, or the job fails
            return []

    with riding(Rider(items)) as rider:
        out = call()
    return out, rider.written


def _complete(client: ClaudeClient, request: ClaudeRequest, deadline: Deadline) -> dict[str, Any]:
    return generate_out(client.complete(request, deadline))


def _structured(
    finish: Callable[[BaseModel, ClaudeResult], dict[str, Any]], output: type[BaseModel], result: ClaudeResult
) -> dict[str, Any]:
    """One call's structured answer in its route's shape; StructuredOutputError if it does not hold."""
    return finish(structured.parse_output(output, result), result)


def _complete_structured(
    finish: Callable[[BaseModel, ClaudeResult], dict[str, Any]],
    client: ClaudeClient,
    request: ClaudeRequest,
    output: type[BaseModel],
    deadline: Deadline,
) -> dict[str, Any]:
    return finish(*client.complete_structured(request, output, deadline))


def batch_request(item: Item, user: str, feature: str) -> ClaudeRequest:
    """The request one Message Batches entry sends: the realtime request, output schema included."""
    if isinstance(item, ClassifyJob):
        return structured.with_output(*classify.classify_request(item.input, user, feature))
    if isinstance(item, IdeasJob):
        return structured.with_output(*ideas.ideas_request(item.input, user, feature))
    return generate.generate_request(item.body(), user, feature)


def answer_check(item: Item) -> dict[str, Any] | None:
    """What the job record keeps to read a batch answer later (the labels, the count), never the text."""
    if isinstance(item, ClassifyJob):
        return {"labels": item.input.labels}
    if isinstance(item, IdeasJob):
        return {"count": item.input.count}
    return None


def batch_answer(task: str, check: dict[str, Any] | None, result: ClaudeResult) -> dict[str, Any]:
    """A batch entry's result in its route's shape; StructuredOutputError when it does not hold."""
    if task == "classify" and check is not None:
        labels = [str(label) for label in check["labels"]]
        body = ClassifyBody.model_construct(text="", labels=labels)
        _, output = classify.classify_request(body, "")
        return classify_out(classify.classify_answer(body, structured.parse_output(output, result)), result)
    if task == "ideas" and check is not None:
        ideas_body = IdeasBody.model_construct(topic="", count=int(check["count"]))
        _, output = ideas.ideas_request(ideas_body, "")
        return ideas_out(ideas.ideas_answer(structured.parse_output(output, result)), result)
    return generate_out(result)


__all__ = ["Item", "answer_check", "batch_answer", "batch_request", "run"]
