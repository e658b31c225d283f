"""POST /stream is being built; until then it answers 501 so the rest of the stack runs."""

from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"error": {"code": "NOT_IMPLEMENTED", "message": "streaming is not available yet", "request_id": ""}}'
    await send({"type": "http.response.start", "status": 501, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
