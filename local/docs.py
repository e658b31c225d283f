"""Swagger UI for the local stack at /docs, reading the API's own GET /openapi.json.

The page and its assets are served from the Swagger UI build that Powertools ships (no CDN, nothing
vendored here). Deployed, the API publishes only the document (GET /openapi.json); point any
OpenAPI tool at it.
"""

from __future__ import annotations

from pathlib import Path

import aws_lambda_powertools.event_handler.openapi.swagger_ui as swagger_ui

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Claude on Lambda: API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body>
</html>
"""
_ASSETS = Path(swagger_ui.__file__).parent
# Path -> (file or None for the page, content type).
FILES: dict[str, tuple[Path | None, str]] = {
    "/docs": (None, "text/html; charset=utf-8"),
    "/docs/swagger-ui.css": (_ASSETS / "swagger-ui.min.css", "text/css; charset=utf-8"),
    "/docs/swagger-ui-bundle.js": (_ASSETS / "swagger-ui-bundle.min.js", "text/javascript; charset=utf-8"),
}


def page(path: str) -> tuple[bytes, str] | None:
    """The body and content type for a /docs path, or None when `path` is not one of ours."""
    found = FILES.get(path.rstrip("/") or path)
    if found is None:
        return None
    file, content_type = found
    return (PAGE.encode() if file is None else file.read_bytes()), content_type
