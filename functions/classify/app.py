"""POST /classify: always answers one of the labels it was given."""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from aws_lambda_powertools.event_handler import Response

from claudekit.http import rest
from claudekit.http.openapi import CLAUDE_ERRORS
from claudekit.tasks import classify
from claudekit.tasks.classify import ClassifyBody, ClassifyOut

app = rest.create_app()


@app.post("/classify", operation_id="classify", responses=rest.responses(*CLAUDE_ERRORS, limited=True))
def post_classify(body: ClassifyBody) -> Response[ClassifyOut]:
    return rest.respond(app, classify.classify(body, rest.caller(app), rest.deadline(app)))


handler = rest.lambda_handler(app)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
