"""Runs across machines: the `celery` executor (dagster-celery) and what its workers need.

`INFRAKITCHEN_EXECUTOR=celery` gives every provision job dagster-celery's executor: the run
process only queues steps on the broker, and `dagster-celery worker` processes, anywhere,
execute them. Nothing of a step may then live on one machine's disk alone, so:

- tofu state must be in a shared backend (`pg`, `s3`, ...): a `local` backend is refused at
  validation (`local_state_problems`), since the next step may run on another worker;
- saved plans live (encrypted) in the lifecycle store, and a working directory is a cache
  that any worker rebuilds (`init` from the shared backend), so every worker may keep its
  own `INFRAKITCHEN_HOME`;
- every worker and the run process share the lifecycle store (`INFRAKITCHEN_DATABASE_URL`),
  its key (`INFRAKITCHEN_SECRET_KEY`), the Dagster instance (dagster-postgres), the
  pipelines, and `INFRAKITCHEN_EXECUTOR=celery` (so that they all build the same job).

Broker and result backend come from `INFRAKITCHEN_CELERY_BROKER` (default RabbitMQ on
127.0.0.1:5672) and `INFRAKITCHEN_CELERY_BACKEND` (default `rpc://`, results back through
the broker). When set, they reach Dagster as `{env: ...}` references, so a password in
them is never part of a job definition or of run config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .spec import Pipeline

if TYPE_CHECKING:
    from dagster import ExecutorDefinition

CELERY = "celery"
#: executors whose steps may run on another machine than the run (and than each other)
DISTRIBUTED_EXECUTORS = (CELERY,)
#: backends whose state lives on the disk of whoever runs tofu
MACHINE_LOCAL_BACKENDS = ("local",)

BROKER_ENV = "INFRAKITCHEN_CELERY_BROKER"
BACKEND_ENV = "INFRAKITCHEN_CELERY_BACKEND"
DEFAULT_BROKER = "pyamqp://guest@127.0.0.1:5672//"
DEFAULT_BACKEND = "rpc://"

#: Celery settings shared by the executor and every worker (deploy/celery-worker.yaml):
#: a worker takes one step at a time and acknowledges it when done, so a queued step goes
#: to an idle worker instead of waiting behind a busy one that prefetched it. A worker
#: process killed mid-step fails that step (it is not redelivered: task_reject_on_worker_lost
#: stays off), which the run-failure handling and healing already cover.
CELERY_SETTINGS: dict[str, Any] = {
    "worker_prefetch_multiplier": 1,
    "task_acks_late": True,
}


def executor_preference(explicit: str | None = None) -> str:
    """The executor asked for: `explicit`, else INFRAKITCHEN_EXECUTOR, else auto."""
    return explicit or os.environ.get("INFRAKITCHEN_EXECUTOR") or "auto"


def is_distributed(executor: str | None) -> bool:
    return executor in DISTRIBUTED_EXECUTORS


def local_state_problems(pipeline: Pipeline, executor: str | None = None) -> list[str]:
    """Validation: under a distributed executor, no resource may keep its state locally.

    `executor` defaults to INFRAKITCHEN_EXECUTOR, the same setting the definitions use.
    """
    executor = executor_preference(executor)
    if not is_distributed(executor):
        return []
    problems = []
    resources = {n: t for n, t in pipeline.tasks.items() if t.kind == "resource"}
    using_pipeline_backend = sorted(n for n, t in resources.items() if t.backend is None)
    if using_pipeline_backend and pipeline.backend.type in MACHINE_LOCAL_BACKENDS:
        names = ", ".join(using_pipeline_backend[:5])
        if len(using_pipeline_backend) > 5:
            names += f", ... ({len(using_pipeline_backend)} in all)"
        problems.append(
            f"backend: type {pipeline.backend.type!r} keeps tofu state on one machine's disk, "
            f"but the executor is {executor!r} (INFRAKITCHEN_EXECUTOR), whose steps run on any "
            f'worker (tasks {names}): use a shared state backend such as type = "pg"')
    for name, task in sorted(resources.items()):
        if task.backend is not None and task.backend.type in MACHINE_LOCAL_BACKENDS:
            problems.append(
                f"task {name!r}: backend type {task.backend.type!r} keeps tofu state on one "
                f"machine's disk, but the executor is {executor!r} (INFRAKITCHEN_EXECUTOR), "
                'whose steps run on any worker: use a shared state backend such as "pg"')
    return problems


def celery_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The celery executor's config (also a worker's `execution.config`): broker and
    backend as `{env: NAME}` references when NAME is set in `env` (default: this process's
    environment), resolved at run time and never stored; else the secret-free defaults."""
    env = os.environ if env is None else env
    broker = {"env": BROKER_ENV} if env.get(BROKER_ENV) else DEFAULT_BROKER
    backend = {"env": BACKEND_ENV} if env.get(BACKEND_ENV) else DEFAULT_BACKEND
    return {"broker": broker, "backend": backend, "config_source": dict(CELERY_SETTINGS)}


def celery_executor_def() -> ExecutorDefinition:
    """dagster-celery's executor, configured from the environment (imported only when
    chosen: celery costs ~0.3 s of import that other executors need not pay)."""
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(), name="infrakitchen_celery")


def write_worker_config(path: Path, env: Mapping[str, str] | None = None) -> Path:
    """A `dagster-celery worker start -y PATH` file matching the executor (JSON is YAML)."""
    import json

    path.write_text(json.dumps({"execution": {"config": celery_config(env)}}, indent=2) + "\n")
    return path


def worker_command(config_yaml: Path, name: str, *, concurrency: int = 1,
                   loglevel: str = "INFO", dagster_celery: str = "dagster-celery") -> list[str]:
    """argv of one worker: `dagster-celery worker start` on dagster-celery's app, `name`
    as its Celery node name, `concurrency` steps at a time (each in its own process)."""
    return [dagster_celery, "worker", "start", "-A", "dagster_celery.app", "-y",
            str(config_yaml), "-n", name, "-l", loglevel, "--", "-c", str(concurrency)]
