"""The OpenAPI 3.1 document, generated from the code: `make openapi` writes it, `--check` fails on drift.

Routes come from template.yaml's Api events (what deploys): each zip function's Powertools app
describes its own operations (request models, `Response[Model]` success models, the error
envelope of each status it declares); the streaming function, a Starlette app, is described
here from the same pydantic models its route uses. A route added to the template and its
function is in the next `make openapi` without touching this file.

The document is written to layers/claude/claudekit/http/openapi.json (the layer ships it, so the
deployed GET /openapi.json serves it) and linked from openapi.json at the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Literal

from pydantic import BaseModel

from local.instances import load_module
from local.shim import LAYER, ROOT

TITLE = "Claude on Lambda"
VERSION = "1.0.0"
DESCRIPTION = (
    "Claude features served from AWS Lambda behind API Gateway. Authenticate with a Cognito user pool "
    "ID token in the Authorization header (locally, the stack takes the caller from X-User-Id instead). "
    'Every error is `{"error": {"code", "message", "request_id"}}`; every response carries X-Request-Id.'
)
# A Cognito user pool authorizer reads the ID token from this header (template.yaml: CognitoAuthorizer).
SECURITY_SCHEMES = {
    "cognito": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "A Cognito user pool ID token (not prefixed with Bearer)",
    }
}
# Importing a function builds its client from settings; none of these is contacted.
GENERATOR_ENV = {
    "CLAUDE_SECRET_ID": "openapi-generator",
    "TABLE_NAME": "openapi-generator",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
}
DOCUMENT = LAYER / "claudekit" / "http" / "openapi.json"


def _operations(template: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(function logical id, METHOD, path, function properties) for every Api event."""
    found = []
    for logical, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        for event in props.get("Events", {}).values():
            if event.get("Type") == "Api":
                found.append((logical, event["Properties"]["Method"].upper(), event["Properties"]["Path"], props))
    return found


def _shape(path: str) -> str:
    """A path with its parameter names erased: the template's /jobs/{id} is the code's /jobs/{job_id}."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def _no_auth(template: dict[str, Any], logical: str, method: str, path: str) -> bool:
    for event in template["Resources"][logical]["Properties"].get("Events", {}).values():
        p = event.get("Properties", {})
        if event.get("Type") == "Api" and p.get("Method", "").upper() == method and p.get("Path") == path:
            return bool((p.get("Auth") or {}).get("Authorizer") == "NONE")
    return False


def _schema(model: type[BaseModel], schemas: dict[str, Any], *, request: bool = False) -> dict[str, Any]:
    """`model`'s schema into components (its nested models too), and a reference to it: what a
    request body accepts (`request`, as Powertools documents bodies) or what a response holds."""
    mode: Literal["validation", "serialization"] = "validation" if request else "serialization"
    definition = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    for name, nested in definition.pop("$defs", {}).items():
        schemas.setdefault(name, nested)
    schemas.setdefault(model.__name__, definition)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def stream_operation(schemas: dict[str, Any], path: str = "/stream") -> dict[str, Any]:
    """A route of the stream function (functions/stream/app.py): a JSON body in, server-sent
    events out. POST /stream takes the /generate body; POST /conversations/{id}/stream a message."""
    from claudekit.http import openapi
    from claudekit.tasks.conversations import ConversationMessageBody
    from claudekit.tasks.generate import GenerateBody
    from claudekit.tasks.stream import ConversationStreamDone, StreamDelta, StreamDone, StreamError

    conversation = path.startswith("/conversations/")
    body, done = (ConversationMessageBody, ConversationStreamDone) if conversation else (GenerateBody, StreamDone)

    # One schema per event, as OpenAPI 3.2 describes an event stream: its name and its JSON data.
    events = [
        {
            "type": "object",
            "properties": {
                "event": {"const": name},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": _schema(model, schemas),
                },
            },
            "required": ["event", "data"],
        }
        for name, model in (("delta", StreamDelta), ("done", done), ("error", StreamError))
    ]
    errors: dict[int, dict[str, Any]] = {
        k: dict(v)
        for k, v in openapi.responses(*openapi.CLAUDE_ERRORS, *((404,) if conversation else ()), limited=True).items()
    }
    for declared in errors.values():
        if "content" in declared:
            declared["content"] = {"application/json": {"schema": _schema(openapi.ErrorOut, schemas)}}
    success = errors.pop(200)
    success["description"] = (
        "Server-sent events: `event: delta` (data: StreamDelta) for each piece of text, then exactly one "
        f"`event: done` (data: {done.__name__}) or `event: error` (data: StreamError, the upstream failed "
        "mid-stream). Every failure before the first event is an ordinary JSON error with its status."
    )
    success["content"] = {"text/event-stream": {"schema": {"oneOf": events}}}
    operation: dict[str, Any] = {
        "summary": f"POST {path}",
        "operationId": "streamConversationMessage" if conversation else "stream",
        "description": (
            "As POST /conversations/{id}/messages, the answer streamed as it is written."
            if conversation
            else "As POST /generate, the answer streamed as it is written."
        ),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"\{([^}]+)\}", path)
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _schema(body, schemas, request=True)}},
        },
        "responses": {"200": success, **{str(code): value for code, value in errors.items()}},
    }
    _tidy(operation)
    return operation


def build() -> dict[str, Any]:
    """The whole document, from the template's routes and the functions' code."""
    for key, value in GENERATOR_ENV.items():
        os.environ.setdefault(key, value)
    if str(LAYER) not in sys.path:
        sys.path.insert(0, str(LAYER))
    from local.aws import load_template

    template = load_template()
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    apps: dict[str, Any] = {}
    # The stream function's routes last: a model both describe keeps the schema Powertools made.
    operations = sorted(_operations(template), key=lambda op: str(op[3].get("Handler", "")).endswith(".sh"))
    for logical, method, path, props in operations:
        if str(props.get("Handler", "")).endswith(".sh"):  # behind the Lambda Web Adapter: the stream
            operation = stream_operation(schemas, path)
            operation_path = path
        else:
            if logical not in apps:
                module = load_module(ROOT / props["CodeUri"] / "app.py", f"openapi_{logical}")
                apps[logical] = json.loads(module.app.get_openapi_json_schema(title=TITLE, version=VERSION))
            generated = apps[logical]
            matches = [
                (p, item[method.lower()])
                for p, item in generated.get("paths", {}).items()
                if _shape(p) == _shape(path) and method.lower() in item
            ]
            if not matches:
                raise SystemExit(f"{logical} serves no {method} {path} that the template routes to it")
            code_path, operation = matches[0]
            # Documented at the deployed path, with the template's parameter names (/jobs/{id}).
            renames = dict(zip(re.findall(r"\{([^}]+)\}", code_path), re.findall(r"\{([^}]+)\}", path), strict=True))
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path":
                    parameter["name"] = renames.get(parameter["name"], parameter["name"])
            operation_path = path
            _default_errors(operation, operation_path, schemas)
            for name, definition in generated.get("components", {}).get("schemas", {}).items():
                if schemas.setdefault(name, definition) != definition:
                    raise SystemExit(f"two different schemas are both named {name}")
            _tidy(operation)
        if _no_auth(template, logical, method, path):
            operation["security"] = []
        paths.setdefault(operation_path, {})[method.lower()] = operation
    used = json.dumps(paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": DESCRIPTION},
        "paths": {p: paths[p] for p in sorted(paths)},
        "components": {
            "schemas": {k: schemas[k] for k in sorted(schemas) if _referenced(k, used, schemas)},
            "securitySchemes": SECURITY_SCHEMES,
        },
        "security": [{"cognito": []}],
    }


def _default_errors(operation: dict[str, Any], path: str, schemas: dict[str, Any]) -> None:
    """A route that declares no errors of its own (`responses=api.responses(...)`, which every route
    should) gets every error an authenticated route can answer, so the document never omits one."""
    from claudekit.http import openapi

    responses = operation.setdefault("responses", {})
    own = [code for code in responses if code.startswith(("4", "5")) and code != "422"]
    if own:
        return
    codes = set(openapi.CLAUDE_ERRORS if "requestBody" in operation else openapi.READ_ERRORS) | {429, 503}
    if "{" in path:
        codes.add(404)
    success = next((responses[c] for c in sorted(responses) if c.startswith("2")), None)
    if success is not None:
        success.setdefault("headers", {}).update(openapi.REQUEST_ID)
    for code, declared in openapi.responses(*sorted(codes)).items():
        if code >= 400:
            declared["content"] = {"application/json": {"schema": _schema(openapi.ErrorOut, schemas)}}
            responses[str(code)] = declared


def _tidy(operation: dict[str, Any]) -> None:
    """Responses in status order, X-Request-Id required on each. Powertools adds a 422 of its own
    shape to every route; ours is the error envelope, and a route without a body has none."""
    responses = operation.get("responses", {})
    schema = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]
    for response in responses.values():
        if "X-Request-Id" in response.get("headers", {}):
            response["headers"]["X-Request-Id"]["required"] = True
    operation["responses"] = {code: responses[code] for code in sorted(responses)}


def _referenced(name: str, used: str, schemas: dict[str, Any]) -> bool:
    """Whether a schema is reachable from the paths (directly or through another schema)."""
    ref = f'"#/components/schemas/{name}"'
    seen, todo = set(), [used]
    while todo:
        text = todo.pop()
        if ref in text:
            return True
        for other, definition in schemas.items():
            if other not in seen and f'"#/components/schemas/{other}"' in text:
                seen.add(other)
                todo.append(json.dumps(definition))
    return False


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed document differs from the code")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        if not DOCUMENT.exists() or DOCUMENT.read_text() != text:
            print(f"{DOCUMENT.relative_to(ROOT)} is out of date: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(text)
    print(f"wrote {DOCUMENT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
