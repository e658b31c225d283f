"""SnapStart's runtime hooks (claudekit/snapstart.py), run as Lambda runs them after a restore.

A fake `snapshot_restore_py` (Lambda's Python runtime ships the real one) records what registers;
"restoring" runs the recorded after_restore hooks against moto and the simulator over real HTTP.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from claudekit import errors, runtime, snapstart
from claudekit.claude import pricing
from claudekit.claude.client import get_client, reset_client
from claudekit.claude.request import ClaudeRequest
from claudekit.claude.retry import backoff
from claudekit.deadline import Deadline
from claudekit.settings import get_settings
from claudekit.store import dynamo
from claudekit.tasks.jobs import queue
from local.aws import LocalAws
from local.simulator import Fault, Simulator

ROOT = Path(__file__).resolve().parents[2]
Hooks = dict[str, list[Callable[[], None]]]


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hooks]:
    """What the module registers with the runtime's `snapshot_restore_py` when it is imported."""
    registered: Hooks = {"before_snapshot": [], "after_restore": []}
    fake = types.ModuleType("snapshot_restore_py")
    fake.register_before_snapshot = registered["before_snapshot"].append  # type: ignore[attr-defined]
    fake.register_after_restore = registered["after_restore"].append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    importlib.reload(snapstart)
    yield registered
    reset_client()


def restore(hooks: Hooks) -> None:
    for hook in hooks["after_restore"]:
        hook()


def request() -> ClaudeRequest:
    return ClaudeRequest(feature="generate", task="generate", user_id="user-snap", prompt="Hello")


def jitter() -> list[float]:
    return [backoff(attempt, 1.0, 20.0) for attempt in range(1, 6)]


def test_importing_the_module_registers_one_hook_of_each_kind(hooks: Hooks) -> None:
    assert hooks == {"before_snapshot": [snapstart.before_snapshot], "after_restore": [snapstart.after_restore]}


def test_restored_copies_of_one_snapshot_draw_different_jitter(hooks: Hooks, settings_env: dict[str, str]) -> None:
    random.seed(1234)  # the random state every copy of the snapshot starts with
    unrestored = jitter()
    random.seed(1234)
    assert jitter() == unrestored  # without the hook, every copy retries on the same schedule

    random.seed(1234)
    restore(hooks)
    first = jitter()
    random.seed(1234)
    restore(hooks)
    second = jitter()
    assert first != unrestored and second != unrestored and first != second


def test_restore_rebuilds_every_network_client(
    hooks: Hooks, settings_env: dict[str, str], local_aws: LocalAws, sim: Simulator
) -> None:
    reset_client()
    before = get_client()
    sdk, table, sqs = before.sdk.get(), dynamo.client(), queue.sqs()
    circuit_store = before.fallback.circuits._store.client

    restore(hooks)

    after = get_client()
    assert after is not before
    assert after.sdk.get() is not sdk
    assert dynamo.client() is not table
    assert queue.sqs() is not sqs
    assert after.fallback.circuits._store.client is not circuit_store
    # The new clients work: a call goes through the simulator and settles in moto.
    assert after.complete(request(), Deadline.after(10)).text
    assert len(sim.message_requests()) == 1


def test_a_key_rotated_while_the_snapshot_waited_is_read_after_restore(
    hooks: Hooks, settings_env: dict[str, str], local_aws: LocalAws
) -> None:
    secrets = local_aws.client("secretsmanager")
    reset_client()
    assert get_client().sdk.get().api_key == "sk-test-key"  # cached for SECRET_MAX_AGE_SECONDS (300)
    secrets.put_secret_value(SecretId=settings_env["CLAUDE_SECRET_ID"], SecretString='{"api_key": "sk-rotated"}')
    assert get_client().sdk.get().api_key == "sk-test-key"  # the cache still holds the old one

    restore(hooks)

    assert get_client().sdk.get().api_key == "sk-rotated"


def test_a_cached_closed_circuit_is_read_again_after_restore(
    hooks: Hooks,
    settings_env: dict[str, str],
    make_client: Any,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = "claude-opus-4-1"
    monkeypatch.setenv("MODEL_BALANCED", model)
    monkeypatch.setenv("MODEL_FALLBACK", "")
    reset_client()
    container = get_client()
    container.complete(request(), Deadline.after(10))  # reads the circuit: closed, kept for 2 s
    # Meanwhile another instance sees the model fail and opens its circuit for the fleet.
    other = make_client(breaker_failure_threshold=2, model_fallback="", model_balanced=model)
    sim.script(*[Fault.status(529)] * 2)
    with pytest.raises(errors.UpstreamUnavailable):
        other.complete(request(), Deadline.after(10))
    calls = len(sim.message_requests())

    restore(hooks)

    with pytest.raises(errors.CircuitOpen):
        get_client().complete(request(), Deadline.after(10))
    assert len(sim.message_requests()) == calls  # the open circuit was read, nothing was sent


def test_before_snapshot_warms_settings_and_prices_but_reads_no_key(
    hooks: Hooks, settings_env: dict[str, str], local_aws: LocalAws
) -> None:
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

    reset_client()
    DEFAULT_PROVIDERS.clear()
    pricing.price_table.cache_clear()
    for hook in hooks["before_snapshot"]:
        hook()
    assert get_settings.cache_info().currsize == 1
    assert pricing.price_table.cache_info().currsize == 1
    assert "secrets" not in DEFAULT_PROVIDERS  # no Secrets Manager client, no key in the snapshot


def _import_handler(function: str, env: dict[str, str]) -> dict[str, Any]:
    """Import functions/<function>/app.py as Lambda's init does, in a fresh interpreter with the
    runtime's hook registry faked; report what the import left behind."""
    code = """
import gc, json, sys, types
registered = []
fake = types.ModuleType("snapshot_restore_py")
fake.register_before_snapshot = fake.register_after_restore = registered.append
sys.modules["snapshot_restore_py"] = fake
import app
found = {
    "registered": [hook.__name__ for hook in registered],
    "gc_enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "xray": "aws_xray_sdk" in sys.modules,
    "parameters": "aws_lambda_powertools.utilities.parameters" in sys.modules,
}
for hook in registered:
    if hook.__name__ == "before_snapshot":
        hook()
found["xray_in_snapshot"] = "aws_xray_sdk" in sys.modules
found["parameters_in_snapshot"] = "aws_lambda_powertools.utilities.parameters" in sys.modules
print(json.dumps(found))
"""
    path = os.pathsep.join([str(ROOT / "functions" / function), str(ROOT / "layers" / "claude"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": path, "AWS_LAMBDA_FUNCTION_NAME": function},
        cwd=ROOT / "functions" / function,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(("function", "traces"), [("generate", True), ("worker", True), ("stream", False)])
def test_a_handler_registers_the_hooks_and_unpauses_the_collector_after_its_imports(
    settings_env: dict[str, str], function: str, traces: bool
) -> None:
    found = _import_handler(function, dict(os.environ))
    assert found["registered"] == ["before_snapshot", "after_restore"]
    assert found["gc_enabled"] and found["frozen"] > 10_000  # init's objects set aside, collector back on
    # X-Ray is the first invocation's (telemetry.traced), never init's; a snapshot holds it where it
    # records, and never under the Lambda Web Adapter (the stream function).
    assert found["xray"] is False
    assert found["xray_in_snapshot"] is traces
    # The key's reader likewise: the first read imports it, a snapshot holds it (never the key).
    assert found["parameters"] is False
    assert found["parameters_in_snapshot"] is True


def test_every_handler_imports_the_hooks_first_and_unpauses_the_collector_last() -> None:
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        lines = [line for line in app.read_text().splitlines() if line.strip() and not line.startswith("#")]
        imports = [line for line in lines if line.startswith(("import ", "from "))]
        assert imports[:2] == [
            "from __future__ import annotations",
            "from claudekit import snapstart  # isort: skip",
        ]
        assert lines[-1].startswith("snapstart.initialised()"), app


def test_every_reset_the_restore_calls_exists() -> None:
    # A renamed reset would only fail on AWS, in a restore: name them here.
    for module, name in runtime.RESETS:
        assert callable(getattr(importlib.import_module(module), name)), f"{module}.{name}"
