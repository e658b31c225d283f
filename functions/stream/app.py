"""POST /stream and POST /conversations/{id}/stream: Claude's answer as server-sent events.

Lambda's managed Python runtime cannot stream, so this function is an ASGI app that `run.sh`
starts under uvicorn; the Lambda Web Adapter turns each invocation into an HTTP request to it and
streams the response back through API Gateway (`ResponseTransferMode: RESPONSE_STREAM`). What a
streamed request goes through is claudekit/http/sse.py; what each route asks is tasks/stream.py.
"""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from functools import partial

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from claudekit.http import asgi, sse
from claudekit.tasks import stream
from claudekit.tasks.conversations import ConversationMessageBody
from claudekit.tasks.generate import GenerateBody


async def post_stream(request: Request) -> asgi.Reply:
    return await sse.respond(request.scope, request.receive, GenerateBody, stream.generate)


async def post_conversation_stream(request: Request) -> asgi.Reply:
    """A turn as the same events as /stream; `done` carries the buffered route's fields but `text`."""
    turn = partial(stream.conversation_turn, str(request.path_params["conversation_id"]))
    return await sse.respond(request.scope, request.receive, ConversationMessageBody, turn)


app = asgi.with_cors(
    Starlette(
        routes=[
            Route("/stream", post_stream, methods=["POST"]),
            Route("/conversations/{conversation_id}/stream", post_conversation_stream, methods=["POST"]),
            Route("/healthz", asgi.ready, methods=["GET"]),  # LWA's readiness check
        ],
        exception_handlers={HTTPException: asgi.routing_error, Exception: asgi.bug},
    )
)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
