"""POST /ideas: exactly `count` validated blog ideas, or a documented error."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from claudekit import api, tasks
from claudekit.client import get_client
from claudekit.contract import IdeasBody, IdeasOut
from claudekit.openapi import CLAUDE_ERRORS

app = api.create_app()


@app.post("/ideas", operation_id="ideas", responses=api.responses(*CLAUDE_ERRORS, limited=True))
def ideas(body: IdeasBody) -> Response[IdeasOut]:
    found, result = tasks.ideas(get_client(), body, api.caller(app), api.deadline(app))
    return api.respond(
        app,
        IdeasOut(
            ideas=found,
            **api.result_fields(result),
        ),
    )


handler = api.lambda_handler(app)
