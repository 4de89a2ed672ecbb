"""The jobs server's HTTP application: OpenAI's Files and fine-tuning jobs routes, and in the same
app tunelab's serving routes (`tunelab.serve.app`, whole, without a served model of its own,
answering every path the jobs routes do not take): its model pool answers every succeeded job's
`ft:` model and the offered bases on /v1/chat/completions and /v1/models. Same API keys, same
OpenAI error shape, same rule: a client's mistake is a 4xx naming the field, never a 5xx."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse

from tunelab import __version__
from tunelab.config import JobsConfig, ServeConfig
from tunelab.errors import TunelabError
from tunelab.jobs import page
from tunelab.jobs.executor import make_executor
from tunelab.jobs.graders_routes import graders_router
from tunelab.jobs.schemas import (Checkpoint, CheckpointList, EventList, FileDeleted, FileList,
                                  FileObject, FilePurpose, FineTuningJob, JobCreateRequest, JobList, checkpoint_object, event_object,
                                  file_object, job_object)
from tunelab.jobs.spec import JobRequestError, check_base_exists, requested_method, resolve_base
from tunelab.jobs.store import JobStore
from tunelab.jobs.worker import Worker, run_dir_of, served_models
from tunelab.serve.app import BodySizeLimit, create_app
from tunelab.serve.auth import OPEN_PATHS, ApiKeyCheck
from tunelab.serve.errors import ApiError, install_error_handlers
from tunelab.serve.schemas import ErrorResponse

log = logging.getLogger("tunelab.jobs")
FILES, JOBS = "/v1/files", "/v1/fine_tuning/jobs"
ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in {
    400: "Invalid request: the field named in error.param.", 404: "No such file or job.",
    413: "Upload larger than jobs.max_file_bytes."}.items()}


def serving_config(cfg: JobsConfig, keys: list[str]) -> ServeConfig:
    """The serving half's settings: the jobs server's keys, a prediction log in the jobs
    directory, no registry file (the store is the record of which models exist)."""
    return ServeConfig(api_keys=keys, max_models=cfg.max_models, max_adapters=0, registry=None,
                       prediction_log=str(Path(cfg.jobs_dir) / "predictions.db"))


def create_jobs_app(cfg: JobsConfig, *, api_keys: list[str] | None = None) -> FastAPI:
    """The jobs server for `cfg`; `api_keys`: the accepted keys (default cfg.api_keys; the CLI
    passes tunelab.serve.auth.api_keys(cfg.api_keys), which adds TUNELAB_API_KEYS)."""
    keys = list(cfg.api_keys if api_keys is None else api_keys)
    store = JobStore(cfg.jobs_dir)
    serving = create_app(serving_config(cfg, keys), api_keys=keys, pool_only=True)
    pool = serving.state.service.pool
    worker = Worker(cfg, store, make_executor(cfg),
                    on_model=lambda name, run_dir: pool.register(name, run_dir, source="jobs"))

    def register_known_models() -> None:
        """The offered local bases and every succeeded job's model and checkpoints, as the pool's models."""
        for name, base in cfg.models.items():
            if Path(base).expanduser().is_dir():
                try:
                    pool.register(name, Path(base).expanduser(), source="jobs")
                except TunelabError as exc:
                    log.warning("base %s is not served: %s", name, exc)
        for job in store.jobs(limit=1_000_000, statuses=("succeeded",)):
            for model_id, path in served_models(store, job, run_dir_of(Path(cfg.jobs_dir), job["id"])).items():
                try:
                    pool.register(model_id, path, source="jobs")
                except TunelabError as exc:
                    log.warning("%s is not served: %s", model_id, exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with serving.router.lifespan_context(serving):
            register_known_models()
            worker.start()
            try:
                yield
            finally:
                await asyncio.to_thread(worker.stop)
                store.close()

    app = FastAPI(title="tunelab jobs", version=__version__, lifespan=lifespan,
                  description="OpenAI's fine-tuning API (files, jobs, events, checkpoints) on tunelab's stages; "
                              "the fine-tuned models are answered by /v1/chat/completions of the same server.")
    app.state.store, app.state.worker, app.state.serving = store, worker, serving
    app.add_middleware(BodySizeLimit, max_bytes=cfg.max_file_bytes, metrics=serving.state.metrics)
    # outermost: the key is checked before the body is read; the jobs page's shell (no data) is open
    app.add_middleware(ApiKeyCheck, keys=keys, open_paths=OPEN_PATHS | {"/jobs"})
    install_error_handlers(app)
    app.include_router(graders_router())  # OpenAI's graders API (tunelab.jobs.graders_routes)

    def job_or_404(job_id: str) -> dict:
        job = store.job(job_id)
        if job is None:
            raise ApiError(404, f"no fine-tuning job {job_id!r} here", code="fine_tune_not_found",
                           param="fine_tuning_job_id")
        return job

    def file_or_404(file_id: str) -> dict:
        row = store.file(file_id)
        if row is None:
            raise ApiError(404, f"no file {file_id!r} here", code="file_not_found", param="file_id")
        return row

    # files

    @app.post(FILES, response_model=FileObject, responses=ERRORS, summary="Upload a file (multipart)")
    async def upload(file: UploadFile = File(...), purpose: FilePurpose = Form(...)):
        name = Path(file.filename or "").name
        if not name:
            raise ApiError(400, "the uploaded file has no filename", code="invalid_file", param="file")
        row = await asyncio.to_thread(store.add_file, name, purpose, file.file)
        if row["bytes"] == 0:
            store.delete_file(row["id"])
            raise ApiError(400, "the uploaded file is empty", code="empty_file", param="file")
        return file_object(row)

    @app.get(FILES, response_model=FileList, responses=ERRORS, summary="List files, newest first")
    async def list_files(purpose: str | None = None, after: str | None = None,
                         limit: int = Query(10000, ge=1, le=10000), order: str = Query("desc", pattern="^(asc|desc)$")):
        rows = store.files(purpose=purpose, after=after, limit=limit + 1, order=order)
        data = [file_object(r) for r in rows[:limit]]
        return FileList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                        has_more=len(rows) > limit)

    @app.get(FILES + "/{file_id}", response_model=FileObject, responses=ERRORS, summary="A file's object")
    async def retrieve_file(file_id: str):
        return file_object(file_or_404(file_id))

    @app.get(FILES + "/{file_id}/content", responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
             response_class=FileResponse, summary="A file's content")
    async def file_content(file_id: str):
        row = file_or_404(file_id)
        return FileResponse(store.file_path(file_id), media_type="application/octet-stream", filename=row["filename"])

    @app.delete(FILES + "/{file_id}", response_model=FileDeleted, responses=ERRORS, summary="Delete a file")
    async def delete_file(file_id: str):
        file_or_404(file_id)
        return FileDeleted(id=file_id, deleted=store.delete_file(file_id))

    # jobs

    @app.post(JOBS, response_model=FineTuningJob, responses=ERRORS, summary="Create a fine-tuning job")
    async def create_job(request: JobCreateRequest):
        for param in ("training_file", "validation_file"):
            file_id = getattr(request, param)
            if file_id is None:
                continue
            row = store.file(file_id)
            if row is None:
                raise ApiError(400, f"{param} {file_id!r} is not an uploaded file", code=f"invalid_{param}", param=param)
            if row["purpose"] != "fine-tune":
                raise ApiError(400, f"{param} {file_id!r} has purpose {row['purpose']!r}, not 'fine-tune'",
                               code=f"invalid_{param}", param=param)
        try:
            method = requested_method(request)
            fine_tuned = None
            source = store.job_with_model(request.model) if request.model not in cfg.models else None
            if source is not None:
                fine_tuned = {**source, "run_dir": str(run_dir_of(Path(cfg.jobs_dir), source["id"]))}
            base, base_name = resolve_base(request.model, cfg, fine_tuned)
            check_base_exists(base)
        except JobRequestError as exc:
            raise ApiError(400, exc.message, code=exc.code, param=exc.param) from None
        except TunelabError as exc:
            raise ApiError(400, str(exc), code="model_not_available", param="model") from None
        seed = request.seed if request.seed is not None else secrets.randbelow(2_147_483_647)
        job = store.add_job(model=request.model, base=base, base_name=base_name, training_file=request.training_file,
                            validation_file=request.validation_file, suffix=request.suffix, seed=seed,
                            metadata=request.metadata, method=method,
                            hyperparameters=method[method["type"]]["hyperparameters"])
        worker.wake()
        return job_object(job)

    @app.get(JOBS, response_model=JobList, responses=ERRORS, summary="List fine-tuning jobs, newest first")
    async def list_jobs(http: Request, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
        metadata = {key[len("metadata["):-1]: value for key, value in http.query_params.multi_items()
                    if key.startswith("metadata[") and key.endswith("]")}
        rows = store.jobs(after=after, limit=limit + 1, metadata=metadata or None)
        return JobList(data=[job_object(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @app.get(JOBS + "/{fine_tuning_job_id}", response_model=FineTuningJob, responses=ERRORS, summary="A job")
    async def retrieve_job(fine_tuning_job_id: str):
        return job_object(job_or_404(fine_tuning_job_id))

    @app.post(JOBS + "/{fine_tuning_job_id}/cancel", response_model=FineTuningJob, responses=ERRORS,
              summary="Cancel a job (its process stops within seconds; checkpoints are kept)")
    async def cancel_job(fine_tuning_job_id: str):
        job = job_or_404(fine_tuning_job_id)
        if not store.update_job(job["id"], status="cancelled", finished_at=int(time.time()), estimated_finish=None,
                                only_if_status=("validating_files", "queued", "running", "pausing", "paused")):
            raise ApiError(400, f"the job is {store.job(job['id'])['status']} and cannot be cancelled",
                           code="invalid_state", param="fine_tuning_job_id")
        if job["status"] not in ("running", "pausing"):  # no process to stop: say so now
            store.add_event(job["id"], "Job cancelled")
        worker.wake()
        return job_object(store.job(job["id"]))

    @app.post(JOBS + "/{fine_tuning_job_id}/pause", response_model=FineTuningJob, responses=ERRORS,
              summary="Pause a queued or running job (status pausing, then paused; checkpoints kept)")
    async def pause_job(fine_tuning_job_id: str):
        job = job_or_404(fine_tuning_job_id)
        paused = store.update_job(job["id"], status="paused", resume=1, only_if_status=("queued",)) or \
            store.update_job(job["id"], status="pausing", only_if_status=("running",))
        if not paused:
            raise ApiError(400, f"the job is {store.job(job['id'])['status']}; only a queued or running job can be "
                                "paused", code="invalid_state", param="fine_tuning_job_id")
        if store.job(job["id"])["status"] == "paused":
            store.add_event(job["id"], "Job paused")
        worker.wake()
        return job_object(store.job(job["id"]))

    @app.post(JOBS + "/{fine_tuning_job_id}/resume", response_model=FineTuningJob, responses=ERRORS,
              summary="Resume a paused job: queued again, training continues from its last checkpoint")
    async def resume_job(fine_tuning_job_id: str):
        job = job_or_404(fine_tuning_job_id)
        if not store.update_job(job["id"], status="queued", resume=1, only_if_status=("paused",)):
            raise ApiError(400, f"the job is {store.job(job['id'])['status']}; only a paused job can be resumed",
                           code="invalid_state", param="fine_tuning_job_id")
        store.add_event(job["id"], "Job resumed; queued")
        worker.wake()
        return job_object(store.job(job["id"]))

    @app.get(JOBS + "/{fine_tuning_job_id}/events", response_model=EventList, responses=ERRORS,
             summary="A job's events, newest first (messages and per-step metrics)")
    async def list_events(fine_tuning_job_id: str, after: str | None = None, limit: int = Query(20, ge=1, le=10000)):
        job_or_404(fine_tuning_job_id)
        rows = store.events(fine_tuning_job_id, after=after, limit=limit + 1)
        return EventList(data=[event_object(r) for r in rows[:limit]], has_more=len(rows) > limit)

    @app.get(JOBS + "/{fine_tuning_job_id}/checkpoints", response_model=CheckpointList, responses=ERRORS,
             summary="A job's checkpoints, newest first")
    async def list_checkpoints(fine_tuning_job_id: str, after: str | None = None, limit: int = Query(10, ge=1, le=1000)):
        job = job_or_404(fine_tuning_job_id)
        rows = store.checkpoints(job["id"], after=after, limit=limit + 1)
        name = job["fine_tuned_model"] or f"ft:{job['base_name']}:{job['suffix'] or ''}:{job['id']}"
        data = [checkpoint_object(r, name) for r in rows[:limit]]
        return CheckpointList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                              has_more=len(rows) > limit)

    page.install(app, store, cfg.jobs_dir)  # GET /jobs, GET /jobs/view
    app.openapi = lambda: openapi_schema(app, bool(keys))
    # every path no route of this app takes (chat, completions, models, health, metrics) goes to the
    # serving app; routes added to this app later (a jobs page) still come first
    app.router.default = serving
    return app


def openapi_schema(app: FastAPI, with_keys: bool) -> dict:
    """FastAPI's schema of the jobs routes, saying what the server does: invalid bodies get the
    OpenAI-style 400 (not FastAPI's 422) and, with API keys, the bearer scheme."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            if with_keys:
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = {"description": "Missing or invalid API key.", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    components = schema.setdefault("components", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.get("schemas", {}).pop(name, None)
    if with_keys:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    app.openapi_schema = schema
    return schema
