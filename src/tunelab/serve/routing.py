"""Which model answers a request, and with which task prefix: the `model` a request names is
the served model, a registered adapter of its base, or a registered model of its own (loaded
here first if it is not); `ID:TASK` names the task of a multi-task run."""
from __future__ import annotations

from tunelab.serve.errors import ApiError, load_failed
from tunelab.serve.pool import ADAPTER, Registration
from tunelab.serve.service import LiveModel, ModelService


async def resolve(service: ModelService, model: str | None,
                  task: str | None) -> tuple[LiveModel, Registration | None, str | None]:
    """(the model that answers, the registration the request named or None, the task) for the
    model id a request names. A registered model that is not loaded is loaded here (the request
    waits for it)."""
    live, pool = service.live, service.pool
    if service.pool_only and service.ready:
        return await _resolve_registered(service, model, task)
    if not service.ready or live is None:
        why = "the model failed to load" if service.load_error else "the model is still loading"
        raise ApiError(503, f"{why}; retry shortly", type="server_error", code="model_not_ready",
                       headers={"Retry-After": "1"})

    def known(name: str) -> bool:
        return name == service.served_name or pool.get(name) is not None

    name = model
    if model and not known(model) and ":" in model and known(model.rsplit(":", 1)[0]):
        name, named_task = model.rsplit(":", 1)
        if task is not None and task != named_task:
            raise ApiError(400, f"the model names task '{named_task}' and the request task '{task}'; name one",
                           code="invalid_request", param="task")
        task = named_task
    if name in (None, "", service.served_name):
        return live, None, task
    registration = pool.get(name)
    if registration is None:
        raise _not_found(model, [service.served_name, *(r.model_id for r in pool.registrations())])
    if registration.kind == ADAPTER:
        return live, registration, task
    return await _loaded(service, registration), registration, task


async def _resolve_registered(service: ModelService, model: str | None, task: str | None):
    """resolve() of a server without a served model: the request names a registered one."""
    pool = service.pool
    name = model
    if model and pool.get(model) is None and ":" in model and pool.get(model.rsplit(":", 1)[0]) is not None:
        name, task = model.rsplit(":", 1)
    registration = pool.get(name) if name else None
    if registration is None:
        raise _not_found(model or "", [r.model_id for r in pool.registrations()])
    return await _loaded(service, registration), registration, task


async def _loaded(service: ModelService, registration: Registration) -> LiveModel:
    """A registered model of its own, loaded first if it is not (the request waits for it)."""
    try:
        return await service.pool.model(registration)
    except Exception as exc:  # noqa: BLE001 (its files are at fault, not the request)
        raise load_failed(registration.model_id, exc) from None


def _not_found(model: str | None, ids: list[str]) -> ApiError:
    shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more (GET /v1/models)" if len(ids) > 20 else "")
    return ApiError(404, f"the model '{model}' does not exist; served here: {shown or 'none yet'}",
                    code="model_not_found", param="model")


def task_prefix(prefixes: dict[str, str], tasks: list[str], task: str | None, model_id: str) -> str:
    """The input prefix training put before `task`'s inputs (a run trained with one prefix has it
    on every input; one trained with several cannot guess: the request names one)."""
    if task is None:
        if len(prefixes) > 1:
            raise ApiError(400, f"this model was trained on several tasks with their own input prefixes "
                                f"({', '.join(sorted(prefixes))}): name one with `task` or `model: "
                                f"{model_id}:TASK`", code="task_required", param="task")
        return next(iter(prefixes.values()), "")
    if task not in tasks:
        trained = f"this model was trained on {', '.join(tasks)}" if tasks else "this model has no named tasks"
        raise ApiError(400, f"unknown task '{task}'; {trained}", code="unknown_task", param="task")
    return prefixes.get(task, "")
