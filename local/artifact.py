"""Start functions from the built artifact (`sam build` output) the way Lambda starts them, no Docker.

Each function runs in a clean Python 3.13 virtualenv that holds only what the Lambda runtime
provides (boto3), with its build folder as the task root and the layer's ``python/`` where Lambda
mounts /opt/python, and the environment the built template gives it (plus the local endpoints).
Nothing from the dev virtualenv or the source tree is importable there, so a dependency the layer
does not ship fails here as it would fail in Lambda. Used by tests/artifact (CI) and `make bench`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cfn_tools import load_yaml  # type: ignore[import-untyped]

from local import aws

RUNTIME_DRIVER = Path(__file__).resolve().parent / "lambda_runtime.py"
# What the Lambda runtime ships beside the interpreter (the version is ours: Lambda's moves).
RUNTIME_PACKAGES = ["boto3==1.44.8"]


def runtime_python(python: str, venv: Path) -> Path:
    """A clean virtualenv of `python` with only the runtime's packages; reused while it exists."""
    interpreter = venv / "bin" / "python"
    marker = venv / ".runtime-ready"
    if not marker.exists():
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)  # noqa: S603
        pip = [str(interpreter), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *RUNTIME_PACKAGES], check=True)  # noqa: S603
        marker.touch()
    return interpreter


@dataclass
class Artifact:
    """One `sam build` output folder and what its built template says about each function."""

    root: Path
    template: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.template = dict(load_yaml((self.root / "template.yaml").read_text(encoding="utf-8")))

    @property
    def functions(self) -> dict[str, dict[str, Any]]:
        resources = self.template["Resources"]
        return {name: r for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}

    def _global(self, key: str, default: Any = None) -> Any:
        return self.template.get("Globals", {}).get("Function", {}).get(key, default)

    def prop(self, function: str, key: str) -> Any:
        return self.functions[function]["Properties"].get(key, self._global(key))

    def parameter(self, name: str) -> str:
        return str(self.template["Parameters"][name]["Default"])

    def timeout(self, function: str) -> float:
        value = self.prop(function, "Timeout")
        return float(self.parameter(value["Ref"]) if isinstance(value, dict) else value)

    def task_root(self, function: str) -> Path:
        return self.root / str(self.prop(function, "CodeUri"))

    def layer_python(self) -> Path:
        (layer,) = [r for r in self.template["Resources"].values() if r["Type"] == "AWS::Serverless::LayerVersion"]
        return self.root / str(layer["Properties"]["ContentUri"]) / "python"

    def environment(self, function: str, local: aws.LocalAws, base_url: str, python: Path) -> dict[str, str]:
        """Lambda's variables, the template's (Globals resolved against local AWS, then the
        function's own), and the local endpoints; the process inherits nothing else."""
        own = self.functions[function]["Properties"].get("Environment", {}).get("Variables", {})
        return {
            "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": f"{self.task_root(function)}:{self.layer_python()}",
            "PYTHONDONTWRITEBYTECODE": "1",  # /var/task and /opt are read-only in Lambda
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.task_root(function)),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.prop(function, "MemorySize") or 128),
            "_HANDLER": str(self.prop(function, "Handler")),
            "SMOKE_TIMEOUT_SECONDS": str(self.timeout(function)),
            **aws.FAKE_CREDENTIALS,
            **local.environment,
            **{key: str(value) for key, value in own.items() if isinstance(value, str | int | float)},
            "AWS_ENDPOINT_URL": local.endpoint,
            "ANTHROPIC_BASE_URL": base_url,
        }


class Invoker:
    """A function's execution environment: initialised once, then invoked one event at a time."""

    def __init__(self, python: Path, env: dict[str, str], cwd: Path, log: IO[str]) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our driver
            [str(python), str(RUNTIME_DRIVER)],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.init: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the function exited during init (status {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def invoke(self, event: dict[str, Any]) -> Any:
        if "init_error" in self.init:
            raise RuntimeError(f"init failed:\n{self.init['init_error']}")
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(event) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(f"the handler raised:\n{answer['error']}")
        return answer["result"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def web_adapter_app(env: dict[str, str], cwd: Path, log: IO[str], ready_within: float = 60) -> Iterator[int]:
    """Start a web-adapter function through its start script as the adapter does: run the Handler
    (run.sh) with AWS_LWA_PORT set, and poll AWS_LWA_READINESS_CHECK_PATH until it answers below
    500. Yields the port the adapter would proxy invocations to."""
    port = free_port()
    env = {**env, "AWS_LWA_PORT": str(port)}
    process = subprocess.Popen(  # noqa: S603
        ["/bin/bash", str(cwd / env["_HANDLER"])], cwd=cwd, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + ready_within
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the start script exited with status {process.returncode}")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", env.get("AWS_LWA_READINESS_CHECK_PATH", "/"))
                if conn.getresponse().status < 500:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the app never became ready")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":  # pragma: no cover - a manual check: python -m local.artifact <build dir>
    print(json.dumps(sorted(Artifact(Path(sys.argv[1])).functions), indent=2))
