"""The fleet's health state in the table (the circuit and the model's cooldown), against moto over
real HTTP: one read refreshes both, another instance's cooldown is honoured from that read, and a
table that cannot be read fails open, as Powertools' breaker does."""

from __future__ import annotations

from aws_lambda_powertools.utilities.circuit_breaker import CircuitState

from claudekit.store.breaker import CIRCUIT_PREFIX, CircuitStore
from claudekit.store.cooldown import Cooldowns
from claudekit.store.dynamo import Table


def test_the_circuit_read_brings_another_instances_cooldown_without_a_read_of_its_own(
    settings_env: dict[str, str],
) -> None:
    table = settings_env["TABLE_NAME"]
    Cooldowns(table, max_seconds=60).pause("claude-haiku-5-5", 30)  # another instance saw a 429

    here = Cooldowns(table, max_seconds=60)
    circuits = CircuitStore(table, cooldowns=here)
    assert circuits.get_state(f"{CIRCUIT_PREFIX}claude-haiku-5-5").state == CircuitState.CLOSED

    reads: list[str] = []
    events = Table(table).client.meta.events
    events.register("before-call.dynamodb", lambda model, **_: reads.append(model.name), unique_id="count-reads")
    try:
        assert 25 < here.remaining("claude-haiku-5-5") <= 30
        assert here.remaining("claude-sonnet-5-5") >= 0  # a model the circuit read did not cover reads itself
    finally:
        events.unregister("before-call.dynamodb", unique_id="count-reads")
    assert reads == ["GetItem"]


def test_a_table_that_cannot_be_read_fails_open(settings_env: dict[str, str]) -> None:
    here = Cooldowns("no-such-table", max_seconds=60)
    circuits = CircuitStore("no-such-table", cooldowns=here)

    assert circuits.get_state(f"{CIRCUIT_PREFIX}claude-haiku-5-5").state == CircuitState.CLOSED
    assert here.remaining("claude-haiku-5-5") == 0
    here.pause("claude-haiku-5-5", 5)  # the write fails too; this instance still honours its own pause
    assert 4 < here.remaining("claude-haiku-5-5") <= 5
