"""POST /classify: always answers one of the labels it was given."""

from __future__ import annotations

from typing import Any

from claudekit import api, tasks
from claudekit.client import get_client
from claudekit.contract import ClassifyBody, ClassifyOut

app = api.create_app()


@app.post("/classify")
def classify(body: ClassifyBody) -> Any:
    label, result = tasks.classify(get_client(), body, api.caller(app), api.deadline(app))
    return api.respond(
        app,
        ClassifyOut(
            label=label,
            **api.result_fields(result),
        ),
    )


handler = api.lambda_handler(app)
