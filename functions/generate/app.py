"""POST /generate (one completion) and GET /usage (this caller's usage and limits)."""

from __future__ import annotations

from typing import Any

from claudekit import api, tasks
from claudekit.client import get_client
from claudekit.contract import GenerateBody, GenerateOut

app = api.create_app()


@app.post("/generate")
def generate(body: GenerateBody) -> Any:
    result = tasks.generate(get_client(), body, api.caller(app), api.deadline(app))
    return api.respond(
        app,
        GenerateOut(
            text=result.text,
            stop_reason=result.stop_reason,
            truncated=result.truncated,
            request_id=api.request_id(app),
            **api.result_fields(result),
        ),
    )


@app.get("/usage")
def usage() -> Any:
    return api.respond(app, get_client().ledger.report(api.caller(app)))


handler = api.lambda_handler(app)
