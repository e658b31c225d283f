"""POST /jobs (record and enqueue a list of text jobs, or submit them as one message batch) and
GET /jobs/{id} (one job, to its owner)."""

from __future__ import annotations

# First: SnapStart's runtime hooks registered, and the garbage collector paused for the imports below.
from claudekit import snapstart  # isort: skip

from aws_lambda_powertools.event_handler import Response

from claudekit.http import rest
from claudekit.http.openapi import CLAUDE_ERRORS, READ_ERRORS
from claudekit.tasks.jobs import submit
from claudekit.tasks.jobs.models import JobRef, JobsBody, JobsOut, JobView

app = rest.create_app()


@app.post(
    "/jobs",
    operation_id="createJobs",
    responses=rest.responses(*CLAUDE_ERRORS, status=202, description="Queued", limited=True),
)
def create_jobs(body: JobsBody) -> Response[JobsOut]:
    submitted = submit.submit(body, rest.caller(app), deadline=rest.deadline(app))
    return rest.respond(app, JobsOut(jobs=[JobRef(id=s.job_id, status=s.status) for s in submitted]), status=202)


@app.get("/jobs/<job_id>", operation_id="getJob", responses=rest.responses(*READ_ERRORS, 404))
def get_job(job_id: str) -> Response[JobView]:
    return rest.respond(app, JobView.model_validate(submit.get_job(job_id, rest.caller(app))))


handler = rest.lambda_handler(app)

snapstart.initialised()  # every import done: the collector runs again, past init's objects
