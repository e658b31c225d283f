"""Jobs: POST /jobs runs a list of tasks later, through the SQS worker (`"mode": "realtime"`) or
the Message Batches API (`"mode": "batch"`); GET /jobs/{id} reads one back.

Import from the modules: `models` (bodies, queue messages, views), `records` (what a submission
writes), `submit` (POST and GET /jobs), `queue` (SQS: sending, one retry policy), `kinds` (each
feature as a job), `worker` (the SQS worker: realtime jobs), `batch_mode` (Message Batches:
submit, poll, write results back). See docs/jobs.md.
"""
