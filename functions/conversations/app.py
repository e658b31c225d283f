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

from claudekit.claude.client import get_client
from claudekit.http import rest
from claudekit.http.openapi import CLAUDE_ERRORS, READ_ERRORS
from claudekit.store.conversations import ConversationStore
from claudekit.tasks import conversations
from claudekit.tasks.conversations import (
    ConversationBody,
    ConversationMessageBody,
    ConversationOut,
    ConversationTurnOut,
)

app = rest.create_app()
_store: ConversationStore | None = None


def store() -> ConversationStore:
    global _store
    if _store is None:
        _store = ConversationStore(get_client().settings)
    return _store


@app.post(
    "/conversations",
    operation_id="createConversation",
    responses=rest.responses(*READ_ERRORS, 409, 413, 422, status=201, description="Created"),
)
def create(body: Annotated[ConversationBody | None, Body()] = None) -> Response[ConversationOut]:
    # No body at all starts a conversation without a system prompt.
    conv = store().create(rest.caller(app), body.system if body else None)
    return rest.respond(app, ConversationOut.model_validate(conv.public()), status=201)


@app.get(
    "/conversations/<conversation_id>", operation_id="getConversation", responses=rest.responses(*READ_ERRORS, 404)
)
def read(conversation_id: str) -> Response[ConversationOut]:
    return rest.respond(app, ConversationOut.model_validate(store().get(conversation_id, rest.caller(app)).public()))


@app.post(
    "/conversations/<conversation_id>/messages",
    operation_id="addConversationMessage",
    responses=rest.responses(*CLAUDE_ERRORS, 404, limited=True),
)
def message(conversation_id: str, body: ConversationMessageBody) -> Response[ConversationTurnOut]:
    client, user, deadline = get_client(), rest.caller(app), rest.deadline(app)
    conv = store().get(conversation_id, user)
    turn = conversations.prepare(client, store(), conv, body.prompt, body.max_tokens, user, deadline)
    result = conversations.answer(client, store(), turn, deadline)
    return rest.respond(
        app, ConversationTurnOut(**conversations.turn_fields(turn, result), request_id=rest.request_id(app))
    )


handler = rest.lambda_handler(app)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
