"""Batched execution: a pipeline's provision as one subsettable `multi_asset` step.

In the idiom of `dagster-dbt`: one op owns every asset of the pipeline (`can_subset=True`,
so a selection runs only its part), walks the task DAG with a bounded thread pool and
yields one `MaterializeResult` per resource as each finishes. A fan-out then runs at the
speed of its slowest branch: tofu processes run side by side without a step process (and
a definitions load) per task. Each task keeps its `retries`, `retry_delay`, `timeout`,
`ignore_failure`, `if` and `on_failure` semantics inside the step; what is lost against
per-step execution is a step (retry, re-execution, hook) per task in the UI.

Worker threads never touch Dagster: their log lines go through a queue that the step's
own thread drains, and only that thread yields events.
"""

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetObservation,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    multi_asset,
)

from . import policy_check, settings
from .failures import FAILED_TASKS, PIPELINE_TAG
from .graph import PipelineGraph
from .resources import InfraKitchenResource, TofuResource
from .runtime import Outcome, OutcomeStatus, TaskRuntime
from .runtime.prewarm import prewarm
from .steps import (
    NOT_MATERIALISED,
    RETRYABLE_ERRORS,
    as_failure,
    environment_of,
    is_refusal,
    make_runtime,
    outcome_metadata,
    pending_summary,
    perform,
    principal_of,
    report_outcome,
    tag_ui_run,
)
from .translator import InfraKitchenTranslator

BATCH_OP = "batch"


def batch_op_name(graph: PipelineGraph) -> str:
    return f"{graph.pipeline.job_prefix}__{BATCH_OP}"


@dataclass
class _Result:
    name: str
    outcome: Outcome | None = None
    failure: Failure | None = None
    #: what the task raised (a policy deny carries the verdict the check reports)
    error: BaseException | None = None


class _Walk:
    """One batched step: the selected tasks, run as soon as their parents are done."""

    def __init__(self, graph: PipelineGraph, selected: list[str],
                 context: AssetExecutionContext, tofu: TofuResource,
                 infrakitchen: InfraKitchenResource, keys: dict[str, Any]):
        self.graph, self.context, self.keys = graph, context, keys
        self.tofu, self.infrakitchen = tofu, infrakitchen
        self.environment = environment_of(context)
        self.selected = selected
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.principal = principal_of(context, graph, infrakitchen)
        tag_ui_run(context, graph, self.principal)
        self.outcomes: list[Outcome] = []

    # -- one task, on a worker thread ---------------------------------------------------

    def _runtime(self, name: str) -> TaskRuntime:
        runtime = make_runtime(self.graph, self.context, self.tofu, self.infrakitchen,
                               self.environment)
        runtime.log = lambda line: self.lines.put((logging.DEBUG, f"[{name}] {line}"))
        runtime.progress = lambda line: self.lines.put((logging.INFO, line))
        return runtime

    def _run_task(self, name: str) -> _Result:
        """Every attempt of one task, then its own `on_failure` if it failed for good."""
        node = self.graph.nodes[name]
        task = node.task
        attempt = 0
        while True:
            runtime = self._runtime(name)
            try:
                return _Result(name, outcome=perform(runtime, node, self.principal))
            except RETRYABLE_ERRORS as exc:
                failure, error = as_failure(exc), exc
            if failure.allow_retries and attempt < task.retries:
                attempt += 1
                self.lines.put((logging.WARNING, f"{name}: attempt {attempt} failed; retrying "
                                f"({attempt}/{task.retries}): {failure.description}"))
                time.sleep(task.retry_delay or 0)  # the pipeline's own delay between tries
                continue
            if task.on_failure and not is_refusal(failure):
                self.lines.put((logging.WARNING, f"{name} failed for good: running its "
                                f"teardown {task.on_failure!r}"))
                runtime.run_teardown(task.on_failure, failed_task=name,
                                     error_message=failure.description or "failed",
                                     failed_run_id=self.context.run.run_id)
            return _Result(name, failure=failure, error=error)

    # -- the walk, on the step's own thread --------------------------------------------

    def _drain(self) -> None:
        """Log what the workers said since the last call. Progress (INFO) and tool output
        (DEBUG) go out as one event per level, not one per line: each event is a write to
        the run's event log (tens of milliseconds of the step's thread on a busy machine),
        and eight tasks starting at once say sixteen things. A warning or an error is its
        own event, after everything said before it."""
        log = self.context.log
        grouped: dict[int, list[str]] = {logging.INFO: [], logging.DEBUG: []}

        def flush() -> None:
            for level, lines in grouped.items():
                if lines:
                    log.log(level, "\n".join(lines))
                    lines.clear()

        while True:
            try:
                level, line = self.lines.get_nowait()
            except queue.Empty:
                break
            if level in grouped:
                grouped[level].append(line)
            else:
                flush()
                log.log(level, line)
        flush()

    def run(self) -> Iterator[MaterializeResult]:
        chosen = set(self.selected)
        parents = {n: [d for d in self.graph.nodes[n].deps if d in chosen] for n in chosen}
        waiting = [n for n in self.graph.order if n in chosen]
        finished: set[str] = set()
        stopped: set[str] = set()
        failed: list[_Result] = []
        futures: dict[Future[_Result], str] = {}
        warmer = self._prewarm([n for n in waiting if parents[n]])
        with ThreadPoolExecutor(max_workers=settings.max_parallel(),
                                thread_name_prefix="infrakitchen-task") as pool:

            def start_ready() -> None:
                for name in list(waiting):
                    if any(p in stopped for p in parents[name]):
                        waiting.remove(name)
                        stopped.add(name)
                        self.context.log.info(f"{name}: skipped, an upstream task did not "
                                              "materialise")
                    elif all(p in finished for p in parents[name]):
                        waiting.remove(name)
                        futures[pool.submit(self._run_task, name)] = name

            try:
                start_ready()
                while futures:
                    done, _ = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
                    self._drain()
                    events = []
                    for future in done:
                        futures.pop(future)
                        events.append(self._finish(future.result(), finished, stopped, failed))
                    start_ready()  # children start before their parents' events go out
                    yield from (event for event in events if event is not None)
            finally:
                warmer.join()
        self._drain()
        if (summary := pending_summary(self.graph, self.outcomes)) is not None:
            self.context.log.warning(summary)
        if failed:
            raise self._failure(failed)

    def _prewarm(self, names: list[str]) -> threading.Thread:
        """Initialise the working directories of tasks that wait for parents while the
        first ones run (`runtime.prewarm`); two at a time, beside the applies."""
        runtime = make_runtime(self.graph, self.context, self.tofu, self.infrakitchen,
                               self.environment)
        runtime.log = runtime.progress = lambda _line: None
        nodes = [self.graph.nodes[n] for n in names]
        thread = threading.Thread(target=prewarm, args=(runtime, nodes, 2),
                                  name="infrakitchen-prewarm", daemon=True)
        thread.start()
        return thread

    def _finish(self, result: _Result, finished: set[str], stopped: set[str],
                failed: list[_Result]) -> MaterializeResult | None:
        key = self.keys[result.name]
        policy_check.report(self.context, key, self.environment, error=result.error,
                            record=result.outcome.record if result.outcome else None)
        if result.failure is not None:
            stopped.add(result.name)
            failed.append(result)
            self.context.log.error(f"{result.name} failed: {result.failure.description}")
            return None
        outcome = result.outcome
        assert outcome is not None
        self.outcomes.append(outcome)
        report_outcome(self.context, self.graph, self.graph.nodes[result.name], key, outcome)
        metadata = outcome_metadata(outcome)
        if outcome.status in NOT_MATERIALISED:
            stopped.add(result.name)
            if outcome.status != OutcomeStatus.SKIPPED:
                self.context.log_event(AssetObservation(
                    asset_key=key, metadata=metadata,
                    partition=self.context.partition_key
                    if self.context.has_partition_key else None))
            return None
        finished.add(result.name)
        return MaterializeResult(asset_key=key, metadata=metadata)

    @staticmethod
    def _failure(failed: list[_Result]) -> Failure:
        """One step failure naming every failed task, for SPEC 3.4's teardown verdict."""
        tasks = [{"task": r.name, "message": r.failure.description or "",
                  "refused": is_refusal(r.failure)} for r in failed if r.failure]
        names = ", ".join(t["task"] for t in tasks)
        description = "\n".join(f"{t['task']}: {t['message']}" for t in tasks)
        return Failure(description=f"tasks failed: {names}\n{description}",
                       allow_retries=False,
                       metadata={FAILED_TASKS: MetadataValue.json(tasks)})


def build_batched_asset(graph: PipelineGraph, translator: InfraKitchenTranslator,
                        partitions: StaticPartitionsDefinition | None) -> AssetsDefinition:
    """Every task of `graph` as one subsettable multi_asset."""
    names = list(graph.order)
    specs = [translator.get_asset_spec(graph, graph.nodes[n]) for n in names]
    keys = {name: spec.key for name, spec in zip(names, specs, strict=True)}
    by_key = {spec.key: name for name, spec in zip(names, specs, strict=True)}

    @multi_asset(specs=specs, can_subset=True, name=batch_op_name(graph),
                 partitions_def=partitions,
                 op_tags={"infrakitchen/task": BATCH_OP, PIPELINE_TAG: graph.pipeline.name})
    def _batch(context: AssetExecutionContext, tofu: TofuResource,
               infrakitchen: InfraKitchenResource) -> Iterator[MaterializeResult]:
        selected = [by_key[key] for key in context.selected_asset_keys if key in by_key]
        yield from _Walk(graph, selected, context, tofu, infrakitchen, keys).run()

    return _batch
