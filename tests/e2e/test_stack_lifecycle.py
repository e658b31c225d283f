"""`make run`'s own stack, as a newcomer gets it: built-in simulator, banner, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.e2e.conftest import ROOT, _free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_default_stack_serves_prints_curl_lines_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "AWS_ENDPOINT"))}
    env["PORT"] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "local.stack"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        banner = ""
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while "curl" not in banner and time.monotonic() < deadline:
            line = process.stdout.readline().decode()
            if not line and process.poll() is not None:
                break
            banner += line
        assert f"http://127.0.0.1:{port}" in banner
        assert f"curl -s http://127.0.0.1:{port}/generate" in banner

        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/generate",
            data=json.dumps({"prompt": "Write a haiku about retries"}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            assert json.loads(response.read())["text"]

        process.send_signal(stop_signal)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
