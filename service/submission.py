"""The service's write workflows as plain functions over the job store, the
bucket and a publisher: submit a job, retry its failed units, cancel it.
The API calls them; tests call them without HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from service import tuned_recipes
from service.architectures import Architectures
from service.config import DEFAULT_TENANT, Settings
from service.contract import JOB_ID, Publisher, RenderBatch, make_batches
from service.errors import Conflict, NotFound, OverLimit, one_line
from service.jobstore import JobStore
from service.planning import JobPlan, batches, first_kind, plan_job, request_recipe, units_with_keys
from service.quota import TenantQuota
from service.request import JobRequest
from service.storage import Store
from service.user_models import RegisteredModels, require_weights

log = logging.getLogger("dreamfarm.jobs")
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class Limits:
    """This server's limits, tighter than the schema's (which are the engine's)."""

    max_steps: int = 5000
    max_size: int = 512
    max_units_per_job: int = 5000
    max_jobs_in_flight: int = 100
    batch_size: int = DEFAULT_BATCH

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(s.max_steps, s.max_size, s.max_units_per_job, s.max_jobs_in_flight, s.batch_size or DEFAULT_BATCH)

    def check(self, request: JobRequest, steps: int) -> None:
        """`steps`: the request's recipe's."""
        if steps > self.max_steps:
            raise OverLimit(f"steps {steps} over this server's limit of {self.max_steps}", field="steps")
        if request.size is not None and request.size > self.max_size:
            raise OverLimit(f"size {request.size} over this server's limit of {self.max_size}", field="size")
        listed = request.listed_units()
        if listed is not None and listed > self.max_units_per_job:
            raise OverLimit(f"{listed} units in one job; the limit is {self.max_units_per_job} (split the job)",
                            field="units")  # fmt: skip


@dataclass
class Workflows:
    """What the submit, retry and cancel workflows act on."""

    jobs: JobStore
    store: Store
    publisher: Publisher
    architectures: Architectures
    limits: Limits
    #: users' own networks (None: the zoo's built-ins only)
    registered: RegisteredModels | None = None

    def architectures_for(self, tenant: str | None, model: str | None = None) -> Architectures:
        """The zoo as `tenant` sees it: the built-ins and its visible
        registered networks (a built-in `model` needs no look at the bucket)."""
        if self.registered is None or (model is not None and model in self.architectures.registry):
            return self.architectures
        return self.architectures.with_registry(self.registered.registry(self.architectures.registry, tenant))

    def job(self, job_id: str, tenant: str | None) -> dict[str, str]:
        """The job's record; NotFound when there is none or (tenant not None)
        it is another tenant's: a tenant cannot even tell that another's job exists."""
        job = self.jobs.get(job_id) if JOB_ID.fullmatch(job_id) else {}  # fullmatch: no trailing newline
        if not job or (tenant is not None and job.get("tenant", DEFAULT_TENANT) != tenant):
            raise NotFound(f"no job {job_id[:40]!r}")
        return job

    def submit(self, request: JobRequest, tenant: str) -> JobPlan:
        """Plan → reserve a place in the tenant's quota → record → enqueue;
        undone (the job cancelled, the place given back) if a step fails."""
        arch = self.architectures_for(tenant, request.model).get(request.model, request.size)
        require_weights(arch.entry, request.random_weights)
        how = f'POST /v1/tunes {{"model": "{request.model}"}} makes one'
        request = tuned_recipes.resolve(request, first_kind(request, arch), self.store, how, tenant=tenant,
                                        weights_sha256=tuned_recipes.registered_weights(arch.entry))  # fmt: skip
        self.limits.check(request, request_recipe(request, arch).steps)
        plan = plan_job(request, arch, self.store, batch_size=self.limits.batch_size,
                        max_units=self.limits.max_units_per_job)  # fmt: skip
        quota = TenantQuota(self.jobs, self.limits.max_jobs_in_flight)
        quota.reserve(tenant, plan.job_id)
        try:
            messages = make_batches(plan.job_id, plan.batches, plan.labels(), request.recipe)
            self.jobs.create(plan, tenant=tenant, batch_layers=_batch_layers(plan, messages))
            self.publisher.publish(messages)
        except Exception:
            self._abandon(quota, tenant, plan.job_id)
            raise
        where = plan.units[0].spec.layer if len(plan.layers) == 1 else f"{len(plan.layers)} layers"
        log.info("job=%s tenant=%s submitted: %s %s, %d units, %d cached, %d batches", plan.job_id, tenant,
                 request.model, where, len(plan.units), len(plan.cached), len(plan.batches))  # fmt: skip
        return plan

    def retry(self, job_id: str, tenant: str) -> int:
        """Re-enqueue a finished job's failed units; returns the batches enqueued."""
        job = self.job(job_id, tenant)
        failed = self.jobs.failed_keys(job_id)
        if job.get("state") != "done_with_failures" or not failed:
            raise Conflict("only a job that ended with failed units can be retried")
        try:
            request = JobRequest.model_validate_json(job["request"])
        except ValidationError:
            raise Conflict("this job's request is no longer valid on this server; submit a new job") from None
        arch = self.architectures_for(tenant, request.model)
        units = units_with_keys(request, arch.get(request.model, request.size), failed)
        if {u.spec.key() for u in units} != set(failed):
            # Re-planned specs no longer have the failed units' keys: the job's
            # network (its registered weights) or the recipe changed since.
            raise Conflict("this job's units can no longer be planned as they were (its network's weights or "
                           "its recipe changed since): submit a new job")  # fmt: skip
        TenantQuota(self.jobs, self.limits.max_jobs_in_flight).reserve(tenant, job_id)
        self.jobs.reopen(job_id)
        groups = batches([u.spec for u in units], request.batch_size or self.limits.batch_size)
        messages = make_batches(job_id, groups, {u.spec.key(): u.label for u in units}, request.recipe)
        spans = self.jobs.layers(job_id)
        if spans:
            where = {x["path"]: i for i, x in enumerate(spans)}
            self.jobs.add_batch_layers(job_id, {m.batch_id: where[m.items[0].spec.layer] for m in messages})
        self.publisher.publish(messages)
        self.jobs.add_event(job_id, "retried", units=len(units), batches=len(groups))
        log.info("job=%s tenant=%s retried: %d failed units, %d batches", job_id, tenant, len(units), len(groups))
        return len(groups)

    def rebuild_atlas(self, job_id: str, tenant: str) -> None:
        """Queue a finished job's atlas (and bucket record) to be built again:
        after a bucket outage outlasted the atlas task's retries, say."""
        job = self.job(job_id, tenant)
        if job.get("state") not in ("done", "done_with_failures"):
            raise Conflict(f"job {job_id} is {job.get('state')}: only a finished job's atlas can be rebuilt")
        self.publisher.publish_atlas(job_id)
        self.jobs.add_event(job_id, "atlas_requested")
        log.info("job=%s tenant=%s atlas rebuild queued", job_id, tenant)

    def cancel(self, job_id: str, tenant: str) -> bool:
        self.job(job_id, tenant)
        cancelled = self.jobs.cancel(job_id)
        if cancelled:
            TenantQuota(self.jobs, self.limits.max_jobs_in_flight).release(tenant, job_id)
            log.info("job=%s tenant=%s cancelled", job_id, tenant)
        return cancelled

    def _abandon(self, quota: TenantQuota, tenant: str, job_id: str) -> None:
        """A submit failed half-way (Redis or the broker went away): the job, if
        it was created, is cancelled (workers skip what was enqueued)."""
        try:
            quota.release(tenant, job_id)
            if self.jobs.exists(job_id):
                self.jobs.cancel(job_id)
        except Exception as exc:
            log.warning("job=%s could not be cancelled after a failed submit: %s", job_id, one_line(repr(exc)))


def _batch_layers(plan: JobPlan, messages: Sequence[RenderBatch]) -> dict[str, int] | None:
    """Batch id → its layer's place in the job (a batch never mixes layers),
    for a job with `layers`; None for a single-layer job, which needs none."""
    if not plan.request.several_layers:
        return None
    where = plan.layer_index()
    return {m.batch_id: where[m.items[0].spec.layer] for m in messages}
