"""Initialise working directories ahead of their turn.

`init` needs the module, the backend and the binary, never a parent's outputs. So a chain's
later links can be initialised while the first one applies, and `ik run` can initialise
every resource it will run while it imports Dagster: on a 10-long chain that takes ten
`init`s off the critical path. A task whose backend or env cannot be resolved yet (it
refers to a parent's output), whose module is not a local directory, or whose directory
was initialised before is left to its own turn, which also reports any error properly:
nothing here fails a run.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from .. import settings
from ..graph import Node
from ..interpolation import InterpolationError
from ..tofu import TofuError, TofuWorkspace
from .context import RunContext
from .errors import TaskFailure
from .resolve import Resolver


def _workspace(ctx: RunContext, node: Node) -> TofuWorkspace | None:
    if node.kind != "resource" or ctx.graph.module_dir(node.name) is None:
        return None
    if (ctx.working_dir(node) / TofuWorkspace.INIT_MARK).exists():
        return None  # initialised before: its own turn re-inits only if inputs changed
    resolver = Resolver(ctx)
    try:
        resolve, secrets = resolver.lookup(node)
        env, env_secrets, _digests = resolver.env(node, resolve)
        backend = resolver.backend(node, resolve)
    except (InterpolationError, TaskFailure, KeyError):
        return None
    return ctx.workspace(node, backend=backend, env=env, secrets=secrets | env_secrets,
                         timeout=None)


def prewarm_one(ctx: RunContext, node: Node) -> bool:
    """Sync the module, write the backend and `init` one resource; whether it ran init."""
    workspace = _workspace(ctx, node)
    if workspace is None:
        return False
    try:
        with workspace.locked():
            workspace.prepare_for_init()
            return workspace.init()
    except (OSError, TofuError):
        return False  # the task's own init will run and report it


def prewarm(ctx: RunContext, nodes: Iterable[Node], width: int | None = None) -> int:
    """Initialise `nodes` side by side (at most `width`, default INFRAKITCHEN_MAX_PARALLEL);
    how many inits ran. The binary's version is learnt meanwhile, once."""
    candidates = [n for n in nodes if n.kind == "resource"]
    if not candidates:
        return 0
    with ThreadPoolExecutor(max_workers=width or settings.max_parallel(),
                            thread_name_prefix="infrakitchen-prewarm") as pool:
        pool.submit(ctx.tofu.version)  # every fingerprint needs it: learnt beside the inits
        return sum(pool.map(lambda node: prewarm_one(ctx, node), candidates))
