"""SnapStart's runtime hooks, and the garbage collector kept out of the way while a handler imports.

Every handler module imports this first and calls `initialised()` once it has imported everything.

Garbage collector: an init allocates hundreds of thousands of long-lived objects (modules, classes,
pydantic schemas) and every collection during it walks them all for nothing; with it off until the
imports are done, then `gc.freeze()` (those objects move to a generation no collection visits), the
init costs less CPU (docs/operations.md has the numbers). Only in a Lambda execution environment (or
one that emulates it, with AWS_LAMBDA_FUNCTION_NAME): a test process importing this keeps its
collector as it was.

SnapStart (template parameter SnapStart): Lambda snapshots the environment after init and starts
copies from it, so every copy shares the snapshot's memory. `after_restore` makes each copy its own:
a fresh random state (the retry jitter would otherwise be the same in every copy), new network clients
(connections in the snapshot are dead or shared), and nothing time-bound kept (the API key cache, the
breaker and cooldown states, plan overrides: what they said at snapshot time may be long stale).
The hooks register through `snapshot_restore_py`, which Lambda's Python runtime ships; elsewhere
(tests, the local stack) nothing restores, so registering is a no-op.
"""

from __future__ import annotations

import gc
import os
import random
import sys
from collections.abc import Callable

from claudekit import runtime

# Paused from here to `initialised()`: the handler imports everything else after this module.
_GC_PAUSED = "AWS_LAMBDA_FUNCTION_NAME" in os.environ and gc.isenabled()
if _GC_PAUSED:
    gc.disable()

Hook = Callable[[], None]


def before_snapshot() -> None:
    """Warm what is safe in a snapshot (settings, the price table, and what init leaves to the first
    invocation: the Tracer of a traced handler, the secret reader's module); never a connection or
    the key."""
    telemetry = sys.modules.get("claudekit.telemetry")
    if telemetry is not None:
        telemetry.prepare_tracer()
    secret = sys.modules.get("claudekit.claude.secret")
    if secret is not None:
        secret.prepare()  # the module a key read needs; the key itself stays out
    settings = sys.modules.get("claudekit.settings")
    if settings is None:
        return
    parsed = settings.get_settings()
    pricing = sys.modules.get("claudekit.claude.pricing")
    if pricing is not None:
        pricing.price_table(parsed.pricing_json)


def after_restore() -> None:
    """Make this restored copy its own (runs before its first request; Lambda allows it 10 s)."""
    random.seed(os.urandom(32))
    runtime.reset()
    client = sys.modules.get("claudekit.claude.client")
    if client is not None:
        # Built from the environment as in init; it connects to nothing until it is used.
        client.get_client()


def register() -> None:
    """Register the hooks with Lambda's runtime, or locally where it is absent."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found,unused-ignore]
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:
        register_before_snapshot = register_after_restore = _not_in_lambda
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)


def _not_in_lambda(hook: Hook) -> None:
    """Nothing snapshots or restores outside Lambda."""


def initialised() -> None:
    """The handler has imported everything: keep what init built out of every future collection."""
    global _GC_PAUSED
    if _GC_PAUSED:
        gc.freeze()
        gc.enable()
        _GC_PAUSED = False


register()
