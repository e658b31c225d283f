"""POST /conversations, POST /conversations/{id}/messages (buffered) and GET /conversations/{id}.

The streamed variant of adding a message is POST /conversations/{id}/stream on the stream
function: API Gateway cannot stream from a buffered function.
"""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from claudekit.http import rest
from claudekit.http.openapi import CLAUDE_ERRORS, READ_ERRORS
from claudekit.tasks import conversations
from claudekit.tasks.conversations import (
    ConversationBody,
    ConversationMessageBody,
    ConversationOut,
    ConversationTurnOut,
)

app = rest.create_app()


@app.post(
    "/conversations",
    operation_id="createConversation",
    responses=rest.responses(*READ_ERRORS, 409, 413, 422, status=201, description="Created"),
)
def create(body: Annotated[ConversationBody | None, Body()] = None) -> Response[ConversationOut]:
    return rest.respond(app, conversations.start(rest.caller(app), body), status=201)


@app.get(
    "/conversations/<conversation_id>", operation_id="getConversation", responses=rest.responses(*READ_ERRORS, 404)
)
def read(conversation_id: str) -> Response[ConversationOut]:
    return rest.respond(app, conversations.read(conversation_id, rest.caller(app)))


@app.post(
    "/conversations/<conversation_id>/messages",
    operation_id="addConversationMessage",
    responses=rest.responses(*CLAUDE_ERRORS, 404, limited=True),
)
def message(conversation_id: str, body: ConversationMessageBody) -> Response[ConversationTurnOut]:
    turn = conversations.message(conversation_id, body, rest.caller(app), rest.deadline(app), rest.request_id(app))
    return rest.respond(app, turn)


handler = rest.lambda_handler(app)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
