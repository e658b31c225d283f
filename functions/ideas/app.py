"""POST /ideas: exactly `count` validated blog ideas, or a documented error."""

from __future__ import annotations

from typing import Any

from claudekit import api, tasks
from claudekit.client import get_client
from claudekit.contract import IdeasBody, IdeasOut

app = api.create_app()


@app.post("/ideas")
def ideas(body: IdeasBody) -> Any:
    found, result = tasks.ideas(get_client(), body, api.caller(app), api.deadline(app))
    return api.respond(
        app,
        IdeasOut(
            ideas=found,
            **api.result_fields(result),
        ),
    )


handler = api.lambda_handler(app)
