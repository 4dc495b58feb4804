"""How many jobs each tenant may have queued or running at once.

A job is counted in before it is created, then the tenant's jobs in flight
are counted, and the new one is taken out again if that is over the limit:
concurrent submits never overshoot (at worst both are refused). Finished jobs
are pruned from the count whenever it is taken.
"""

from __future__ import annotations

import time

from service.errors import QuotaExceeded
from service.jobstore import JobStore

#: A member with no job record yet is a submit in progress; after this long,
#: one that failed half-way.
GRACE_S = 300.0


class TenantQuota:
    def __init__(self, jobs: JobStore, limit: int) -> None:
        self.jobs = jobs
        self.limit = limit

    def reserve(self, tenant: str, job_id: str) -> None:
        """Count `job_id` in, or raise `QuotaExceeded` (and leave it out)."""
        now = time.time()
        self.jobs.inflight_add(tenant, job_id, now)
        live, stale = 0, []
        for member, added, state in self.jobs.inflight(tenant):
            if member == job_id or state in ("queued", "running") or (state is None and now - added < GRACE_S):
                live += 1
            else:
                stale.append(member)
        self.jobs.inflight_remove(tenant, *stale)
        if live > self.limit:
            self.jobs.inflight_remove(tenant, job_id)
            raise QuotaExceeded(
                f"too many jobs in flight: this token has {live - 1} jobs queued or running and the limit is "
                f"{self.limit}; wait for some to finish or cancel some"
            )

    def release(self, tenant: str, job_id: str) -> None:
        self.jobs.inflight_remove(tenant, job_id)
