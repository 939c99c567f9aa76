"""Task -> `AssetSpec`, in the idiom of `DagsterDbtTranslator` / `DagsterSlingTranslator`.

Subclass `InfraKitchenTranslator` and override a `get_*` method to change keys, groups,
tags or descriptions without touching how assets run.
"""

from __future__ import annotations

import re
from typing import Any

from dagster import AssetKey, AssetSpec

from .graph import Node, PipelineGraph

_TAG_VALUE = re.compile(r"[^A-Za-z0-9_.-]")


def _tag(text: str, limit: int = 63) -> str:
    return _TAG_VALUE.sub("_", text)[:limit].strip("_.-") or "_"


class InfraKitchenTranslator:
    def get_asset_key(self, graph: PipelineGraph, node: Node) -> AssetKey:
        return AssetKey([graph.pipeline.name, node.asset_name])

    def get_group_name(self, graph: PipelineGraph, node: Node) -> str:
        return graph.pipeline.job_prefix

    def get_kinds(self, graph: PipelineGraph, node: Node) -> set[str]:
        return {"opentofu"} if node.kind == "resource" else {"shell"}

    def get_description(self, graph: PipelineGraph, node: Node) -> str:
        task = node.task
        lines = [task.name or node.name]
        if task.description:
            lines.append(task.description)
        if node.kind == "resource":
            lines.append(f"Module: `{task.module}`")
        elif task.cmd:
            lines.append("```sh\n" + task.cmd.strip() + "\n```")
        return "\n\n".join(lines)

    def get_tags(self, graph: PipelineGraph, node: Node) -> dict[str, str]:
        tags = {_tag(t): "" for t in graph.pipeline.tags}
        tags.update({_tag(k): _tag(v) for k, v in node.task.labels.items()})
        tags["infrakitchen/kind"] = node.kind
        return tags

    def get_metadata(self, graph: PipelineGraph, node: Node) -> dict[str, Any]:
        meta: dict[str, Any] = {"infrakitchen/task": node.name,
                                "infrakitchen/pipeline_file": graph.pipeline.path}
        if node.task.module:
            meta["infrakitchen/module"] = node.task.module
        if node.registers:
            meta["infrakitchen/registers"] = ", ".join(node.registers)
        return meta

    def get_code_version(self, graph: PipelineGraph, node: Node) -> str:
        return graph.code_version(node.name)

    def get_deps(self, graph: PipelineGraph, node: Node) -> list[AssetKey]:
        return [self.get_asset_key(graph, graph.nodes[d]) for d in node.deps]

    def get_asset_spec(self, graph: PipelineGraph, node: Node) -> AssetSpec:
        return AssetSpec(
            key=self.get_asset_key(graph, node),
            deps=self.get_deps(graph, node),
            description=self.get_description(graph, node),
            group_name=self.get_group_name(graph, node),
            kinds=self.get_kinds(graph, node),
            tags=self.get_tags(graph, node),
            metadata=self.get_metadata(graph, node),
            code_version=self.get_code_version(graph, node),
            skippable=True,
        )
