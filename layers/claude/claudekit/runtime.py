"""The container's shared objects, forgotten in one call.

Clients and caches are built lazily by the module that owns each (the API key, the DynamoDB and
SQS clients, the worker, the Claude client with its breaker store, cooldowns and plan overrides,
the parsed settings). `reset()` empties them all: a SnapStart restore does it (claudekit.snapstart),
and so do tests and benchmarks that change the environment between runs. Only modules already
imported hold anything, so a reset never imports one for the purpose.
"""

from __future__ import annotations

import sys

# (module, its reset function), in the order they are emptied: the Claude client last, since its
# rebuild reads the settings and the key again.
RESETS = (
    ("claudekit.claude.secret", "reset"),  # the API key and the Secrets Manager client
    ("claudekit.store.dynamo", "reset"),  # the shared DynamoDB client
    ("claudekit.tasks.jobs.queue", "reset"),  # the SQS client
    ("claudekit.tasks.jobs.worker", "reset_worker"),  # the worker and the job store's clients
    ("claudekit.tasks.conversations", "reset_store"),  # the conversation store
    ("claudekit.claude.client", "reset_client"),  # SDK client, breaker store, cooldowns, plan overrides
)


def reset(*, settings: bool = False) -> None:
    """Forget every cached client and time-bound state; `settings=True` also re-reads the environment."""
    for name, function in RESETS:
        module = sys.modules.get(name)
        if module is not None:
            getattr(module, function)()
    if settings and "claudekit.settings" in sys.modules:
        sys.modules["claudekit.settings"].get_settings.cache_clear()
