#!/bin/bash
# Start script for the stream function (its Handler). The Lambda Web Adapter layer
# (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs this, polls AWS_LWA_READINESS_CHECK_PATH (/healthz)
# on 127.0.0.1:AWS_LWA_PORT until it answers below 500, then proxies each invocation to it and
# streams the response back (AWS_LWA_INVOKE_MODE=response_stream).
#
# One process, one event loop: Lambda sends one invocation at a time to an environment.
# The shared layer (claudekit and its dependencies) is in /opt/python.
set -euo pipefail
cd "${LAMBDA_TASK_ROOT:-$(dirname "$0")}"
export PATH="$PATH:${LAMBDA_TASK_ROOT:-.}/bin"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/opt/python${LAMBDA_RUNTIME_DIR:+:$LAMBDA_RUNTIME_DIR}"
exec python3 -m uvicorn app:app \
  --host 127.0.0.1 \
  --port "${AWS_LWA_PORT:-8080}" \
  --workers 1 \
  --no-access-log \
  --no-server-header \
  --timeout-graceful-shutdown 2
