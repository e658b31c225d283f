"""POST /jobs (record and enqueue a list of text jobs, or submit them as one message batch) and
GET /jobs/{id} (one job, to its owner)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from claudekit import api, jobs
from claudekit.jobs.models import JobRef, JobsOut, JobView
from claudekit.openapi import CLAUDE_ERRORS, READ_ERRORS

app = api.create_app()


@app.post(
    "/jobs",
    operation_id="createJobs",
    responses=api.responses(*CLAUDE_ERRORS, status=202, description="Queued", limited=True),
)
def create_jobs(body: jobs.JobsBody) -> Response[JobsOut]:
    submitted = jobs.submit(body, api.caller(app), deadline=api.deadline(app))
    return api.respond(app, JobsOut(jobs=[JobRef(id=s.job_id, status=s.status) for s in submitted]), status=202)


@app.get("/jobs/<job_id>", operation_id="getJob", responses=api.responses(*READ_ERRORS, 404))
def get_job(job_id: str) -> Response[JobView]:
    return api.respond(app, JobView.model_validate(jobs.get_job(job_id, api.caller(app))))


handler = api.lambda_handler(app)
