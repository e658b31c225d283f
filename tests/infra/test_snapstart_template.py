"""SnapStart as a template option (issue 15): off by default, on published versions behind an alias,
and never where it cannot work."""

from __future__ import annotations

from typing import Any


def test_snapstart_is_a_parameter_off_by_default(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["SnapStart"]
    assert parameter["Default"] == "None"
    assert parameter["AllowedValues"] == ["None", "PublishedVersions"]


def test_every_function_publishes_a_version_behind_an_alias_and_takes_the_option(
    global_function: dict[str, Any], functions: dict[str, Any]
) -> None:
    # SnapStart snapshots published versions only; with AutoPublishAlias SAM points the API's and
    # the queue's invocations at the alias, so they run the snapshotted version.
    assert global_function["AutoPublishAlias"] == "live"
    assert global_function["SnapStart"] == {"ApplyOn": {"Ref": "SnapStart"}}
    assert all("AutoPublishAlias" not in f["Properties"] for f in functions.values())


def test_the_stream_function_opts_out(functions: dict[str, Any]) -> None:
    # Its app runs behind the Lambda Web Adapter, outside the Python runtime that runs the restore hooks.
    assert functions["StreamFunction"]["Properties"]["SnapStart"] == {"ApplyOn": "None"}
    others = [name for name, f in functions.items() if "SnapStart" in f["Properties"]]
    assert others == ["StreamFunction"]


def test_nothing_snapstart_cannot_run_with(global_function: dict[str, Any], functions: dict[str, Any]) -> None:
    assert global_function["Runtime"] in {"python3.12", "python3.13", "python3.14"}
    for name, function in functions.items():
        properties = {**global_function, **function["Properties"]}
        assert "ProvisionedConcurrencyConfig" not in properties, name
        assert "FileSystemConfigs" not in properties, name
        assert properties.get("EphemeralStorage", {}).get("Size", 512) <= 512, name
