"""POST /ideas: exactly `count` validated blog ideas, or a documented error."""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from aws_lambda_powertools.event_handler import Response

from claudekit.http import rest
from claudekit.http.openapi import CLAUDE_ERRORS
from claudekit.tasks import ideas
from claudekit.tasks.ideas import IdeasBody, IdeasOut

app = rest.create_app()


@app.post("/ideas", operation_id="ideas", responses=rest.responses(*CLAUDE_ERRORS, limited=True))
def post_ideas(body: IdeasBody) -> Response[IdeasOut]:
    return rest.respond(app, ideas.ideas(body, rest.caller(app), rest.deadline(app)))


handler = rest.lambda_handler(app)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
