"""A request body as JSON, checked before any model sees it.

Every malformed body (not UTF-8, not JSON, NaN, a key twice, nested deeper than any valid body) is
one 400 MALFORMED_REQUEST on every route, REST and stream alike.
"""

from __future__ import annotations

import json
from typing import Any

from claudekit.errors import MalformedRequest

# The deepest valid body is {"items": [{"input": ...}]}; anything far deeper is an attack.
MAX_JSON_DEPTH = 16


def parse_json(raw: bytes | str) -> Any:
    """A request body as JSON, or MalformedRequest: not UTF-8, not JSON, NaN/Infinity, a key twice
    in one object (parsers disagree on which wins, so one copy could slip past a check), too deep."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequest("body is not UTF-8") from None
    try:
        value = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise MalformedRequest("body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, and the constants refused below
        raise MalformedRequest() from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise MalformedRequest("body is nested too deeply")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key appears twice")
    return found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
