"""What a record says about its place in the pipeline: its labels and tags.

InfraKitchen users find resources by labels and see the tags they inherit. The tags a
module receives as its `tags` variable (when it has one) are only part of that: the record
keeps its own `dependency_tags` and `dependency_configs` and the effective inherited ones,
each with the ancestor it came from, whether or not the module takes `tags`.
"""

from __future__ import annotations

from typing import Any

from ..graph import Node, PipelineGraph
from ..interpolation import mask, render_value, to_text
from ..spec import Inherited

SENSITIVE = "(sensitive)"

Lookup = Any  # Callable[[Ref], Any]; see resolve.Lookup


def _shown(value: Any, secrets: set[str] | frozenset[str]) -> Any:
    """`value` as the record may keep it: a value that contains a secret anywhere (a tag
    `db-{{.db.password}}`, say) is "(sensitive)"."""
    text = to_text(value)
    return SENSITIVE if mask(text, secrets) != text else value


def _own(items: list[Inherited], resolve: Lookup, secrets: set[str] | frozenset[str],
         text: bool) -> list[dict[str, Any]]:
    result = []
    for item in items:
        value = render_value(item.value, resolve)
        result.append({"name": item.name, "value": _shown(to_text(value) if text else value,
                                                          secrets),
                       "inherited_by_children": item.inherited_by_children})
    return result


def inherited_entries(graph: PipelineGraph, node: Node, resolve: Lookup
                      ) -> tuple[dict[str, tuple[Any, str]], dict[str, tuple[str, str]]]:
    """(configs, tags) that flow to `node` from its ancestors, each as (value, ancestor);
    nearer ancestors win on conflicts. Tags are text, as tofu's `tags` maps want them."""
    configs: dict[str, tuple[Any, str]] = {}
    tags: dict[str, tuple[str, str]] = {}
    for ancestor in reversed(graph.ancestors(node.name)):  # farthest first: nearer win
        task = graph.nodes[ancestor].task
        for item in task.dependency_configs:
            if item.inherited_by_children:
                configs[item.name] = (render_value(item.value, resolve), ancestor)
        for item in task.dependency_tags:
            if item.inherited_by_children:
                tags[item.name] = (to_text(render_value(item.value, resolve)), ancestor)
    return configs, tags


def record_context(graph: PipelineGraph, node: Node, resolve: Lookup,
                   secrets: set[str] | frozenset[str]) -> dict[str, Any]:
    """{"labels": {...}, "tags": {own, inherited (with `from`), effective}} for `node`.

    Nearer ancestors win on conflicts and the task's own tags win over inherited ones, as
    for the `tags` variable. A value that is a secret is stored as "(sensitive)".
    """
    configs, tags = inherited_entries(graph, node, resolve)
    inherited_tags = {name: {"value": _shown(value, secrets), "from": origin}
                      for name, (value, origin) in tags.items()}
    inherited_configs = {name: {"value": _shown(value, secrets), "from": origin}
                         for name, (value, origin) in configs.items()}
    own_tags = _own(node.task.dependency_tags, resolve, secrets, text=True)
    own_configs = _own(node.task.dependency_configs, resolve, secrets, text=False)
    effective = {name: entry["value"] for name, entry in inherited_tags.items()}
    effective.update({entry["name"]: entry["value"] for entry in own_tags})
    return {
        "labels": dict(node.task.labels),
        "tags": {
            "dependency_tags": own_tags,
            "dependency_configs": own_configs,
            "inherited_tags": [{"name": k, **v} for k, v in sorted(inherited_tags.items())],
            "inherited_configs": [{"name": k, **v}
                                  for k, v in sorted(inherited_configs.items())],
            "effective_tags": dict(sorted(effective.items())),
        },
    }
