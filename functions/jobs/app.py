"""POST /jobs (record and enqueue a list of text jobs, or submit them as one message batch) and
GET /jobs/{id} (one job, to its owner)."""

from __future__ import annotations

from typing import Any

from claudekit import api, jobs

app = api.create_app()


@app.post("/jobs")
def create_jobs(body: jobs.JobsBody) -> Any:
    submitted = jobs.submit(body, api.caller(app), deadline=api.deadline(app))
    return api.respond(app, {"jobs": [{"id": s.job_id, "status": s.status} for s in submitted]}, status=202)


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> Any:
    return api.respond(app, jobs.get_job(job_id, api.caller(app)))


handler = api.lambda_handler(app)
