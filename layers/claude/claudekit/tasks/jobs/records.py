"""What a submission writes, in either mode: one record per job, all of them or none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from claudekit.errors import RateLimited
from claudekit.settings import Settings
from claudekit.store.jobs import JobStore, job_key
from claudekit.tasks.jobs.models import JobMode, JobStatus, input_digest, now_iso
from claudekit.telemetry import hash_user, logger

# When a caller refused for having too many jobs in flight should look again: jobs take seconds
# to minutes, and nothing tells us which of theirs ends first.
IN_FLIGHT_RETRY_SECONDS = 60


class TooManyJobsInFlight(RateLimited):
    """The owner's jobs in flight (queued or running) would pass MAX_JOBS_IN_FLIGHT."""


@dataclass(frozen=True)
class Submitted:
    job_id: str
    status: JobStatus


def new_record(
    job_id: str, owner: str, task: str, value: str | BaseModel, mode: JobMode, now: float, settings: Settings
) -> dict[str, Any]:
    """A queued job's record: its input's digest and size, never the input itself."""
    created = now_iso(now)
    text = value if isinstance(value, str) else value.model_dump_json()
    return {
        **job_key(job_id),
        "job_id": job_id,
        "owner": owner,
        "task": task,
        "mode": mode,
        "input_sha256": input_digest(value),
        "input_chars": len(text),
        "status": "queued",
        "attempts": 0,
        "created_at": created,
        "updated_at": created,
        "expiration": int(now) + settings.job_ttl_seconds,
    }


def create(store: JobStore, records: list[dict[str, Any]], owner: str, settings: Settings) -> None:
    """Record the jobs, or refuse them all when they would pass the owner's in-flight cap."""
    if not store.create(records, owner=owner, cap=settings.max_jobs_in_flight):
        in_flight = store.in_flight(owner)
        logger.info("jobs refused: too many in flight", extra={"user": hash_user(owner), "jobs": len(records)})
        raise TooManyJobsInFlight(
            f"{in_flight} of your jobs are queued or running and this submission adds {len(records)}; "
            f"at most {settings.max_jobs_in_flight} may be in flight: wait for some to finish",
            retry_after=IN_FLIGHT_RETRY_SECONDS,
        )
