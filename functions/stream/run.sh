#!/bin/bash
exec python -m uvicorn --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" app:app
