"""The studio's background work (`do_*`): training a version and activating one. Each runs as a job
(`api/studio/jobs.py`), writes the record when its side effect is done, and audits it."""

from __future__ import annotations

import asyncio
import shutil

from api.audit.models import audit
from api.db import unit_of_work
from api.studio import repository, service
from api.studio.jobs import JobContext
from api.studio.models import VersionStatus
from api.studio.training import TrainingRefused
from api.timeutil import utcnow


class JobFailed(Exception):
    """A job that ended on purpose; `result` is kept on the job (e.g. the validation report)."""

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result


async def do_train(studio: service.Studio, ctx: JobContext) -> dict:
    """Snapshot the files, validate, train (unless this exact data has a model), evaluate, record the version."""
    job_dir = studio.work_dir / "jobs" / str(ctx.job_id)
    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    await ctx.report(progress=0.01, stage="snapshot", line="copying nlu_data")
    async with studio.files_lock():
        # Edits made while we train go into the next version, not half into this one.
        await asyncio.to_thread(studio.copy_files, job_dir / "data")
    if ctx.params.get("evaluate"):
        try:
            return await _evaluate_existing(studio, ctx, job_dir, ctx.params["evaluate"])
        finally:
            shutil.rmtree(job_dir / "eval", ignore_errors=True)
    try:
        outcome = await studio.trainer.run(job_dir / "data", ctx.report)
    except TrainingRefused as exc:
        raise JobFailed(str(exc), {"issues": [i.as_dict() for i in exc.issues]}) from exc
    finally:
        # Keep the snapshot (small text, useful to see what was trained); drop the big intermediate models.
        for heavy in ("out", "eval"):
            shutil.rmtree(job_dir / heavy, ignore_errors=True)
    async with unit_of_work(studio.engine) as session:
        version = await repository.ensure_version(session, deployment=studio.deployment, model_file=outcome.model_file)
        if outcome.trained or version.source == "external":
            version.created_by, version.created_at = ctx.created_by, utcnow()
        version.data_hash, version.duration_s = outcome.data_hash, outcome.duration_s
        version.evaluation, version.macro_f1 = outcome.evaluation, outcome.evaluation["macro_f1"]
        version.confusion_image, version.status = outcome.confusion_image, VersionStatus.READY
        version.source = "studio" if outcome.trained else version.source
        await session.flush()
        audit(
            session,
            actor_kind="agent",
            actor_id=ctx.created_by,
            action="studio_train",
            subject=f"version:{version.id}",
            job_id=ctx.job_id,
            model_file=outcome.model_file,
            macro_f1=version.macro_f1,
            trained=outcome.trained,
        )
        version_id = version.id
    await ctx.flush(version_id=version_id)
    return {
        "version_id": version_id,
        "model_file": outcome.model_file,
        "trained": outcome.trained,
        "macro_f1": outcome.evaluation["macro_f1"],
        "duration_s": outcome.duration_s,
        "warnings": [i.as_dict() for i in outcome.warnings],
    }


async def _evaluate_existing(studio: service.Studio, ctx: JobContext, job_dir, model_file: str) -> dict:
    """The shipped model, evaluated like any version (its evaluation model is trained, not the model)."""
    evaluation, image = await studio.trainer.evaluate(job_dir / "data", model_file, ctx.report)
    async with unit_of_work(studio.engine) as session:
        version = await repository.ensure_version(session, deployment=studio.deployment, model_file=model_file)
        version.evaluation, version.macro_f1 = evaluation, evaluation["macro_f1"]
        version.confusion_image, version.status = image, VersionStatus.READY
        audit(
            session,
            actor_kind="system",
            actor_id=None,
            action="studio_evaluate",
            subject=f"version:{version.id}",
            job_id=ctx.job_id,
            model_file=model_file,
            macro_f1=version.macro_f1,
        )
        version_id = version.id
    await ctx.flush(version_id=version_id)
    return {"version_id": version_id, "model_file": model_file, "trained": False, "macro_f1": evaluation["macro_f1"]}


async def do_activate(studio: service.Studio, ctx: JobContext) -> dict:
    """Blue/green switch to the version, then mark it active in SQL (the record follows the fact)."""
    version_id = int(ctx.params["version_id"])
    async with unit_of_work(studio.engine) as session:
        version = await repository.get_version(session, deployment=studio.deployment, version_id=version_id)
        model_file = version.model_file
    await ctx.report(progress=0.02, stage="preparing", line=f"activating version {version_id} ({model_file})")
    switched = await studio.activator.switch_to(model_file, version_id, ctx.report)
    async with unit_of_work(studio.engine) as session:
        await repository.deactivate_versions(session, studio.deployment)
        version = await repository.get_version(session, deployment=studio.deployment, version_id=version_id)
        version.active, version.activated_at, version.activated_by = True, utcnow(), ctx.created_by
        action = "studio_restore" if ctx.params.get("restore") else "studio_activate"
        audit(
            session,
            actor_kind="agent" if ctx.created_by else "system",
            actor_id=ctx.created_by,
            action=action,
            subject=f"version:{version_id}",
            job_id=ctx.job_id,
            previous_version_id=ctx.params.get("previous_version_id"),
            override=bool(ctx.params.get("override")),
            url=switched["url"],
        )
    await ctx.report(progress=1.0, stage="active", line=f"version {version_id} is active at {switched['url']}")
    return {"version_id": version_id, **switched}
