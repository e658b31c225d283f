"""POST /classify: always answers one of the labels it was given."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from claudekit import api, tasks
from claudekit.client import get_client
from claudekit.contract import ClassifyBody, ClassifyOut
from claudekit.openapi import CLAUDE_ERRORS

app = api.create_app()


@app.post("/classify", operation_id="classify", responses=api.responses(*CLAUDE_ERRORS, limited=True))
def classify(body: ClassifyBody) -> Response[ClassifyOut]:
    label, result = tasks.classify(get_client(), body, api.caller(app), api.deadline(app))
    return api.respond(
        app,
        ClassifyOut(
            label=label,
            **api.result_fields(result),
        ),
    )


handler = api.lambda_handler(app)
