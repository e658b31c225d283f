"""What the simulated model says: deterministic text and schema-valid JSON derived from the prompt.

Everything is a pure function of the request, so the same prompt always gets the same answer and a
test can rely on it. Choices (enum values, numbers, booleans) come from a hash of the prompt and the
position in the schema, so they are valid but not always the first option.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]{2,}")
_STOPWORDS = frozenset(
    "the and for with that this from into about your you are was were what which when where who how "  # noqa: SIM905
    "have has had not but all any can will would should could please write give make tell list use "
    "using some more most than then them they their there these those its it's our out per".split()
)
_FILLER = (
    "Here is a considered answer about {a}.",
    "The key point is that {a} depends on {b}.",
    "In practice, {a} works best when {b} is measured early.",
    "Consider how {b} shapes {a} over time.",
    "A simple approach to {a} starts with {b}.",
    "Teams that track {a} usually improve {b} as well.",
    "This keeps {a} predictable and {b} easy to review.",
    "Finally, {a} and {b} should be revisited regularly.",
)
_DEFAULT_WORDS = ("the request", "the topic", "the details")


def _digest(*parts: str) -> int:
    raw = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(raw[:8], "big")


def collect_text(value: Any) -> str:
    """Every string inside ``value`` (a request body or part of it), joined by newlines."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Mapping):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return "\n".join(out)


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the last user message (what the reply is "about")."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            parts = [
                str(b.get("text", "")) for b in content or [] if isinstance(b, Mapping) and b.get("type") == "text"
            ]
            return " ".join(parts)
    return ""


def keywords(text: str, limit: int = 8) -> list[str]:
    """Distinct content words of ``text``, in order of appearance."""
    seen: list[str] = []
    for word in _WORD.findall(text):
        lower = word.lower()
        if lower not in _STOPWORDS and lower not in seen:
            seen.append(lower)
        if len(seen) >= limit:
            break
    return seen


def natural_reply_tokens(prompt: str) -> int:
    """How long the model "wants" to answer: grows with the prompt, between 24 and 400 tokens."""
    return min(400, 24 + 2 * len(prompt.split()))


def reply_tokens(prompt: str, count: int) -> list[str]:
    """``count`` output tokens (words with their leading space) of sentences that mention the prompt."""
    words = keywords(prompt) or list(_DEFAULT_WORDS)
    seed = _digest("text", prompt)
    tokens: list[str] = []
    sentence = 0
    while len(tokens) < count:
        template = _FILLER[(seed + sentence) % len(_FILLER)] if sentence else _FILLER[0]
        a = words[(seed + sentence) % len(words)]
        b = words[(seed + 2 * sentence + 1) % len(words)]
        for piece in template.format(a=a, b=b).split(" "):
            tokens.append(piece if not tokens else " " + piece)
        sentence += 1
    tokens = tokens[:count]
    if tokens and not tokens[-1].endswith("."):
        tokens[-1] = tokens[-1].rstrip(",;:") + "."
    return tokens


# --- JSON from a JSON schema -------------------------------------------------------------------------

_HINT = re.compile(r"\{([^{}]*)\}")
_HINT_KEYS = frozenset(
    {
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "format",
    }
)


def _description_hints(description: object) -> dict[str, Any]:
    """Constraints the SDK moved into ``description`` (``"{maxLength: 40, minLength: 5}"``)."""
    if not isinstance(description, str):
        return {}
    hints: dict[str, Any] = {}
    for group in _HINT.findall(description):
        for pair in group.split(","):
            key, sep, raw = pair.partition(":")
            key, raw = key.strip(), raw.strip()
            if not sep or key not in _HINT_KEYS:
                continue
            try:
                hints[key] = json.loads(raw)
            except ValueError:
                hints[key] = raw.strip("'\"")
    return hints


class SchemaFaker:
    """Produces a value that validates against a JSON schema, deterministically from ``prompt``."""

    def __init__(self, root: Mapping[str, Any], prompt: str) -> None:
        self._root = root
        self._prompt = prompt
        self._words = keywords(prompt) or ["the", "topic"]

    def generate(self) -> Any:
        return self._value(self._root, "$", depth=0)

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            ref = str(schema["$ref"])
            if not ref.startswith("#"):
                raise ValueError(f"unsupported $ref {ref!r}")
            node: Any = self._root
            for part in ref.lstrip("#").split("/"):
                if part:
                    node = node[part.replace("~1", "/").replace("~0", "~")]
            merged = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**node, **merged}
            seen += 1
        return schema

    def _value(self, schema: Any, path: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, Mapping):
            return self._string({}, path)
        schema = self._resolve(schema)
        schema = {**_description_hints(schema.get("description")), **schema}
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            options = list(schema["enum"])
            return options[_digest(self._prompt, path) % len(options)]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = [o for o in schema[key] if not self._is_null(o)] or list(schema[key])
                return self._value(options[0], path, depth)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self._resolve(part) if isinstance(part, Mapping) else {})
            return self._value(merged, path, depth)
        type_ = schema.get("type")
        if isinstance(type_, list):
            type_ = next((t for t in type_ if t != "null"), "null")
        if type_ is None:
            type_ = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if type_ == "object":
            return self._object(schema, path, depth)
        if type_ == "array":
            return self._array(schema, path, depth)
        if type_ == "integer":
            return self._integer(schema, path)
        if type_ == "number":
            return self._number(schema, path)
        if type_ == "boolean":
            return _digest(self._prompt, path) % 2 == 0
        if type_ == "null":
            return None
        return self._string(schema, path)

    def _is_null(self, schema: Any) -> bool:
        return isinstance(schema, Mapping) and self._resolve(schema).get("type") == "null"

    def _object(self, schema: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = [str(name) for name in schema.get("required") or []]
        names = list(properties) + [name for name in required if name not in properties]
        if depth > 8:  # recursive schemas: only what is required
            names = required
        return {name: self._value(properties.get(name, {}), f"{path}.{name}", depth + 1) for name in names}

    def _array(self, schema: Mapping[str, Any], path: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        count = min(max(low, 3 if depth < 4 else 1), high)
        prefix = list(schema.get("prefixItems") or [])
        items = schema.get("items", {})
        values = []
        for index in range(count):
            item_schema = prefix[index] if index < len(prefix) else items
            values.append(self._value(item_schema, f"{path}[{index}]", depth + 1))
        return values

    def _integer(self, schema: Mapping[str, Any], path: str) -> int:
        low, high = _bounds(schema, default=(1, 100), integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first = -(-int(low) // step) * step
            choices = max(0, (int(high) - first) // step)
            return first + step * (_digest(self._prompt, path) % (choices + 1))
        return int(low) + _digest(self._prompt, path) % (int(high) - int(low) + 1)

    def _number(self, schema: Mapping[str, Any], path: str) -> float:
        low, high = _bounds(schema, default=(0.0, 100.0), integer=False)
        fraction = (_digest(self._prompt, path) % 1000) / 1000
        return round(low + (high - low) * fraction, 3) if high > low else float(low)

    def _string(self, schema: Mapping[str, Any], path: str) -> str:
        fmt = schema.get("format")
        seed = _digest(self._prompt, path)
        if fmt == "date-time":
            value = f"2026-{seed % 12 + 1:02d}-{seed % 28 + 1:02d}T12:00:00Z"
        elif fmt == "date":
            value = f"2026-{seed % 12 + 1:02d}-{seed % 28 + 1:02d}"
        elif fmt == "time":
            value = f"{seed % 24:02d}:00:00"
        elif fmt == "email":
            value = f"{self._words[0]}@example.com"
        elif fmt in ("uri", "url"):
            value = f"https://example.com/{self._words[0]}"
        elif fmt == "uuid":
            hex_ = hashlib.sha256(f"{self._prompt}{path}".encode()).hexdigest()
            value = f"{hex_[:8]}-{hex_[8:12]}-4{hex_[13:16]}-8{hex_[17:20]}-{hex_[20:32]}"
        else:
            name = path.rsplit(".", 1)[-1].split("[", 1)[0].strip("$").replace("_", " ") or "text"
            picked = [self._words[(seed + i) % len(self._words)] for i in range(min(3, len(self._words)))]
            value = f"{name.capitalize()} about {' '.join(dict.fromkeys(picked))}"
        min_len = int(schema.get("minLength", 0))
        max_len = schema.get("maxLength")
        filler = " " + " ".join(self._words)
        while len(value) < min_len:
            value += filler
        if isinstance(max_len, int) and len(value) > max_len:
            value = value[:max_len]
            if value != value.rstrip() and len(value.rstrip()) >= min_len:
                value = value.rstrip()
        return value


def _bounds(schema: Mapping[str, Any], default: tuple[float, float], integer: bool) -> tuple[float, float]:
    """``(low, high)`` inclusive bounds from minimum/maximum/exclusive*, around ``default``."""
    nudge = 1.0 if integer else 1e-3
    low: float | None = _as_float(schema.get("minimum"))
    high: float | None = _as_float(schema.get("maximum"))
    exclusive_low = _as_float(schema.get("exclusiveMinimum"))
    exclusive_high = _as_float(schema.get("exclusiveMaximum"))
    if exclusive_low is not None:
        low = exclusive_low + nudge
    if exclusive_high is not None:
        high = exclusive_high - nudge
    if integer:
        low = None if low is None else float(math.ceil(low))
        high = None if high is None else float(math.floor(high))
    if low is None and high is None:
        return default
    if low is None:
        assert high is not None
        low = min(default[0], high)
    if high is None:
        high = max(default[1], low)
    return low, high


def _as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def schema_json(schema: Mapping[str, Any], prompt: str) -> Any:
    """A value valid against ``schema`` (``$ref``/``$defs``, enums, bounds, lengths), from ``prompt``."""
    return SchemaFaker(schema, prompt).generate()
