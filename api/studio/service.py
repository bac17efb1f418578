"""The studio for one app instance (`app.state.studio`): its parts, their lifecycle, and the record work
on model versions and jobs. No FastAPI here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
from functools import partial
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import audit
from api.db import unit_of_work
from api.errors import Conflict
from api.paths import RASA_BIN, RASA_ENV, RASA_REQUIREMENTS
from api.settings import Settings
from api.studio import repository
from api.studio.activation import Activator, NluFollower, RasaInstances, configured_replicas, rasa_status, serves
from api.studio.jobs import JobRunner
from api.studio.models import JobKind, StudioJob, VersionStatus
from api.studio.nlu_files import NluFiles
from api.studio.rasa_check import RasaReaderCheck
from api.studio.training import Trainer, data_hash
from api.studio.versions import needs_override
from bot.nlu import RasaClient
from bot.scenarios import load_catalog

log = logging.getLogger(__name__)
CONVERGE_EVERY_S = 15.0


class Studio:
    """Files, trainer, job runner and the blue/green activator, wired to this app's Redis, SQL and NLU client."""

    def __init__(self, settings: Settings, engine: AsyncEngine, redis: Redis, nlu: RasaClient) -> None:
        from api.studio import flows  # the job handlers need the studio; import here to keep the cycle out

        self.settings, self.engine, self.redis = settings, engine, redis
        self.deployment = settings.nlu_deployment
        checker = RasaReaderCheck(RASA_BIN.with_name("python"))
        if not checker.available:
            log.warning("no Rasa environment at %s: studio writes are checked by our reader only", checker.python)
        self.files = NluFiles(settings.nlu_data_dir, checker if checker.available else None)
        self.models_dir = Path(settings.models_dir)
        self.work_dir = Path(settings.data_dir) / "studio" / self.deployment
        rasa_env = {**RASA_ENV, "RASA_CACHE_DIRECTORY": str((self.work_dir / "rasa-cache").resolve())}
        self.follower = NluFollower(redis, nlu, deployment=self.deployment)
        self.instances = RasaInstances(
            redis,
            deployment=self.deployment,
            rasa_bin=RASA_BIN,
            rasa_env=rasa_env,
            models_dir=self.models_dir,
            work_dir=self.work_dir / "rasa",
            start_timeout_s=settings.studio_rasa_start_timeout_s,
        )
        self.activator = Activator(
            redis,
            deployment=self.deployment,
            instances=self.instances,
            follower=self.follower,
            default_url=settings.rasa_url,
            nlu_timeout_s=settings.nlu_timeout_s,
            replicas=configured_replicas(settings),
            host_token=settings.nlu_host_token.get_secret_value() if settings.nlu_host_token else None,
            load_timeout_s=settings.studio_rasa_start_timeout_s + 60,
        )
        self.trainer = Trainer(
            models_dir=self.models_dir,
            rasa_bin=RASA_BIN,
            rasa_env=rasa_env,
            requirements=RASA_REQUIREMENTS,
            min_examples=settings.studio_min_examples,
            eval_fraction=settings.studio_eval_fraction,
            epochs_override=settings.studio_train_epochs,
            scenario_intents=set(load_catalog()),
        )
        self.runner = JobRunner(
            engine,
            redis,
            deployment=self.deployment,
            handlers={
                JobKind.TRAIN: partial(flows.do_train, self),
                JobKind.ACTIVATE: partial(flows.do_activate, self),
            },
        )
        self._files_lock_key = (
            # a lock name, not security
            "yt:studio:files:" + hashlib.sha1(str(Path(settings.nlu_data_dir).resolve()).encode()).hexdigest()[:12]  # noqa: S324
        )
        self._reconcile_task: asyncio.Task | None = None
        self._converge_task: asyncio.Task | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------
    async def start(self, *, run_jobs: bool | None = None) -> None:
        """Follow the active NLU; run training and activation jobs only where told (`api.studio.trainer`, or
        an API worker with `YUNTING_STUDIO_JOBS_IN_API`)."""
        await self.follower.start()
        if self.settings.studio_jobs_in_api if run_jobs is None else run_jobs:
            self.runner.start()
            self._converge_task = asyncio.create_task(self._converge(), name="studio-converge")
        self._reconcile_task = asyncio.create_task(self._reconcile(), name="studio-reconcile")

    async def stop(self) -> None:
        for task in (self._reconcile_task, self._converge_task):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.runner.stop()
        await self.follower.stop()
        if self.files.checker is not None:
            await asyncio.to_thread(self.files.checker.close)
        try:
            state = await self.follower.active()
            others = await self.activator.live_workers()
        except Exception:
            state, others = None, 0
        active_url = state["url"] if state else None
        if others:  # other workers still parse with the active instance: leave it running for them
            await self.instances.stop_mine(keep=active_url)
            return
        await self.instances.stop_mine()
        if (
            state
            and state["url"] != self.settings.rasa_url.rstrip("/")
            and not await serves(state["url"], state["model_file"])
        ):
            # Nobody serves the active model any more: the next start restores it from SQL (see _reconcile).
            await self.redis.delete(f"yt:nlu:{self.deployment}:active")

    async def _converge(self) -> None:
        """Where jobs run: keep every replica host on the active model (one restarted with an older one)."""
        while True:
            await asyncio.sleep(CONVERGE_EVERY_S)
            if await self.redis.set(f"yt:studio:{self.deployment}:converge", "1", nx=True, ex=int(CONVERGE_EVERY_S)):
                try:
                    await self.activator.converge()
                except Exception:  # a replica or Redis blinked: next round
                    log.warning("bringing replicas to the active model failed", exc_info=True)

    def files_lock(self):
        """One writer at a time over the data directory, across every API worker."""
        return self.redis.lock(self._files_lock_key, timeout=60, blocking_timeout=30)

    def copy_files(self, dest: Path) -> None:
        """A consistent copy of the data directory (callers hold the files lock)."""
        shutil.copytree(self.files.root, dest, ignore=shutil.ignore_patterns(".*"))

    async def _reconcile(self) -> None:
        """At start: record the model the configured Rasa serves, and bring the active version back if a
        restart left the configured Rasa serving something else (e.g. `make run` trained the latest data)."""
        while True:  # a Rasa that comes up late (minutes, on a loaded host) is still recorded
            status = await rasa_status(self.settings.rasa_url)
            if status and status.get("model_file"):
                break
            await asyncio.sleep(5)
        base_model = Path(str(status["model_file"])).name
        try:
            async with unit_of_work(self.engine) as session:
                base = await repository.ensure_version(session, deployment=self.deployment, model_file=base_model)
                active = await repository.get_active(session, deployment=self.deployment)
                if active is None:
                    base.active = True
                    return
                state = await self.follower.active()
                if active.model_file == base_model or (state and await serves(state["url"], active.model_file)):
                    return
                if not await self.redis.set(f"yt:studio:{self.deployment}:restore", "1", nx=True, ex=300):
                    return  # another worker is on it
                if await repository.busy(session, deployment=self.deployment, kind=JobKind.ACTIVATE):
                    return
                session.add(
                    StudioJob(
                        deployment=self.deployment,
                        kind=JobKind.ACTIVATE,
                        version_id=active.id,
                        params={"version_id": active.id, "restore": True},
                    )
                )
            log.info("restoring active NLU version %s (%s)", active.id, active.model_file)
            self.runner.wake()
        except IntegrityError:
            pass  # another worker recorded the same model at the same moment
        finally:
            await self._evaluate_shipped(base_model)

    async def _evaluate_shipped(self, model_file: str) -> None:
        """The model `make run` trained never went through the studio: evaluate it like any version (same
        split, same seeded pipeline), so the first comparison has live numbers. Only when it was trained from
        the files as they are now; the trainer reuses it and runs the held-out evaluation."""
        if not self.settings.studio_evaluate_shipped:
            return
        current = await asyncio.to_thread(data_hash, self.files.root, RASA_REQUIREMENTS)
        async with unit_of_work(self.engine) as session:
            version = await repository.version_of_file(session, deployment=self.deployment, model_file=model_file)
            if version is None or version.status != VersionStatus.UNEVALUATED or version.data_hash != current:
                return
            if await repository.busy(session, deployment=self.deployment, kind=JobKind.TRAIN):
                return
            if not await self.redis.set(f"yt:studio:{self.deployment}:evaluate:{model_file}", "1", nx=True, ex=3600):
                return  # another process queued it
            session.add(
                StudioJob(
                    deployment=self.deployment,
                    kind=JobKind.TRAIN,
                    version_id=version.id,
                    params={"evaluate": model_file},
                )
            )
        log.info("queued the evaluation of the shipped model %s", model_file)
        self.runner.wake()


async def request_training(studio: Studio, session: AsyncSession, agent: Agent) -> StudioJob:
    """Queue a training; one at a time (the machine has two cores, and two would only race)."""
    running = await repository.busy(session, deployment=studio.deployment, kind=JobKind.TRAIN)
    if running is None:
        job = StudioJob(deployment=studio.deployment, kind=JobKind.TRAIN, created_by=agent.id)
        session.add(job)
        try:
            # The check above races with other requests; the partial unique index (one queued or running
            # training per deployment, migration 0007) decides, on every worker.
            await session.flush()
        except IntegrityError:
            await session.rollback()
            running = await repository.busy(session, deployment=studio.deployment, kind=JobKind.TRAIN)
        else:
            audit(
                session, actor_kind="agent", actor_id=agent.id, action="studio_train_requested", subject=f"job:{job.id}"
            )
            return job
    raise Conflict(
        f"a training is already queued or running (job {running.id if running else '?'})",
        code="training_in_progress",
        job_id=running.id if running else None,
    )


async def request_activation(
    studio: Studio, session: AsyncSession, agent: Agent, *, version_id: int, override: bool
) -> StudioJob:
    """Queue the switch to a version (a rollback is the same move to an earlier one).

    Never ship a worse model by accident: a version whose held-out macro-F1 is below the active one's
    (or that has no evaluation, while the active one has) needs `override`.
    """
    version = await repository.get_version(session, deployment=studio.deployment, version_id=version_id)
    if not (studio.models_dir / version.model_file).exists():
        raise Conflict(f"the model file {version.model_file} is gone", code="model_missing")
    if version.status == VersionStatus.EVALUATING:
        raise Conflict("this version is still being evaluated", code="version_not_ready")
    active = await repository.get_active(session, deployment=studio.deployment)
    if active is not None and active.id == version.id:
        raise Conflict("this version is already active", code="already_active")
    if not override and active is not None and needs_override(version, active):
        mine = "unknown" if version.macro_f1 is None else f"{version.macro_f1:.3f}"
        raise Conflict(
            f"macro-F1 {mine} is below the active version's {active.macro_f1:.3f}; "
            "activate with override to ship it anyway",
            code="worse_model",
        )
    job = StudioJob(
        deployment=studio.deployment,
        kind=JobKind.ACTIVATE,
        created_by=agent.id,
        version_id=version.id,
        params={"version_id": version.id, "override": override, "previous_version_id": active.id if active else None},
    )
    session.add(job)
    await session.flush()
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="studio_activate_requested",
        subject=f"version:{version.id}",
        job_id=job.id,
        override=override,
    )
    return job
