"""Task -> `AssetSpec`, in the idiom of `DagsterDbtTranslator` / `DagsterSlingTranslator`.

Subclass `InfraKitchenTranslator` and override a `get_*` method to change keys, groups,
owners, tags or descriptions without touching how assets run.

What Dagster accepts shapes some choices (checked against Dagster 1.13):
- group names are `[A-Za-z0-9_]+` segments (optionally `/`-separated); a pipeline name may
  hold `-`, which no group may, so the group is the pipeline name with `-` -> `_`: the
  closest valid spelling, and the one the pipeline's jobs (`<p>__provision`) already use;
- owners are e-mail addresses or `team:NAME`: an e-mail or `team:` owner is kept, any other
  principal (`alice`) becomes `team:alice` (Dagster has no plain user names);
- tag keys are `[A-Za-z0-9_.-]{1,63}` with at most one `namespace/`, values the same
  characters (up to 63): labels are spelled into that alphabet so the catalog filters by
  them;
- the UI draws an icon for a known kind only; it knows `shell` and `hashicorp` but not
  `terraform`, so a resource has the kinds `terraform` (what it is, and the catalog's
  `kind:terraform` filter) and `hashicorp` (the icon), and the tag `opentofu`.
"""

from __future__ import annotations

import re
from typing import Any

from dagster import AssetKey, AssetSpec, MetadataValue

from .graph import Node, PipelineGraph, is_remote_module
from .module_schema import ModuleSchemaError, markdown_table
from .sources import is_git_source, redact_in

_TAG_VALUE = re.compile(r"[^A-Za-z0-9_.-]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: The first line of a command shown in a description; the whole template is metadata.
_COMMAND_PREVIEW = 80


def _tag(text: str, limit: int = 63) -> str:
    return _TAG_VALUE.sub("_", text)[:limit].strip("_.-") or "_"


def tag_key(text: str) -> str:
    """A label key as a valid tag key: one optional `namespace/` kept (as in
    `app.example.com/tier`), other characters spelled as `_`; `dagster/` is Dagster's own
    namespace, so a label there keeps its name without the slash."""
    namespace, sep, name = text.rpartition("/")
    if not sep or not _tag(namespace).strip("_") or namespace == "dagster":
        return _tag(text.replace("/", "_"))
    return f"{_tag(namespace)}/{_tag(name)}"


def tag_value(text: str) -> str:
    """A label value as a valid tag value (empty stays empty: a tag may be a bare key)."""
    return _TAG_VALUE.sub("_", text)[:63] if text else ""


def asset_owner(principal: str) -> str:
    """A pipeline owner as a Dagster asset owner (an e-mail, or `team:NAME`)."""
    if _EMAIL.match(principal) or (principal.startswith("team:") and len(principal) > 5):
        return principal
    return f"team:{principal}"


class InfraKitchenTranslator:
    def get_asset_key(self, graph: PipelineGraph, node: Node) -> AssetKey:
        return AssetKey([graph.pipeline.name, node.asset_name])

    def get_group_name(self, graph: PipelineGraph, node: Node) -> str:
        """The pipeline name, spelled as a Dagster group name (see the module docstring)."""
        return graph.pipeline.job_prefix

    def get_owners(self, graph: PipelineGraph, node: Node) -> list[str]:
        owners: list[str] = []
        for principal in graph.pipeline.owners:
            owner = asset_owner(principal)
            if owner not in owners:
                owners.append(owner)
        return owners

    def get_kinds(self, graph: PipelineGraph, node: Node) -> set[str]:
        return {"terraform", "hashicorp"} if node.kind == "resource" else {"shell"}

    def get_description(self, graph: PipelineGraph, node: Node) -> str:
        task = node.task
        lines = [task.name or node.name]
        if task.description:
            lines.append(task.description)
        if node.kind == "resource":
            lines.append(f"Module: `{redact_in(task.module or '')}`")
            lines.append(self._interface(graph, node))
        elif node.kind == "abstract":
            lines.append("Abstract record: a lifecycle entry without infrastructure.")
        elif task.cmd:
            lines.append(self._command_summary(node))
        if node.matrix:
            lines.append("Matrix: " + ", ".join(f"`{k}={v}`" for k, v in node.matrix.items()))
        return "\n\n".join(lines)

    def _interface(self, graph: PipelineGraph, node: Node) -> str:
        """The module's variables and outputs as markdown; never fetches a git source (a
        code server loading definitions must not need the network)."""
        try:
            schema = graph.schema(node.name)
        except ModuleSchemaError as exc:
            return f"Variables and outputs cannot be shown: {exc}"
        if schema is None:
            if is_git_source(node.task.module) or is_remote_module(node.task.module or ""):
                return ("A git source: its variables and outputs are read from the commit a "
                        "run resolves (not fetched while definitions load); "
                        f"`ik inspect {graph.pipeline.name}/{node.name}` shows them after a "
                        "run.")
            return "The module directory is missing: no variables or outputs to show."
        tables = self.__dict__.setdefault("_tables", {})  # one per module content
        if schema.digest not in tables:
            tables[schema.digest] = (markdown_table(schema)
                                     or "The module declares no variables or outputs.")
        return tables[schema.digest]

    @staticmethod
    def _command_summary(node: Node) -> str:
        """What a command task does, in words: its first command line and what it
        registers, instead of the raw shell template (kept in the metadata)."""
        commands = [line.strip() for line in (node.task.cmd or "").splitlines()
                    if line.strip() and not line.strip().startswith("#")]
        first = commands[0] if commands else ""
        if len(first) > _COMMAND_PREVIEW:
            first = first[:_COMMAND_PREVIEW - 1] + "…"
        shown = first.replace("`", "'")  # a backtick would end the code span
        text = f"Runs a shell command: `{shown}`"
        if len(commands) > 1:
            text += f" and {len(commands) - 1} more line" + ("s" if len(commands) > 2 else "")
        if node.registers:
            text += ". Registers " + ", ".join(f"`{r}`" for r in node.registers)
        return text + "."

    def get_tags(self, graph: PipelineGraph, node: Node) -> dict[str, str]:
        tags = {_tag(t): "" for t in graph.pipeline.tags}
        tags.update({tag_key(k): tag_value(v) for k, v in node.task.labels.items()})
        if node.kind == "resource":
            tags["opentofu"] = ""
        tags["infrakitchen/kind"] = node.kind
        return tags

    def get_metadata(self, graph: PipelineGraph, node: Node) -> dict[str, Any]:
        meta: dict[str, Any] = {"infrakitchen/task": node.name,
                                "infrakitchen/pipeline_file": graph.pipeline.path}
        if node.task.module:  # a git URL may carry a token: never shown
            meta["infrakitchen/module"] = redact_in(node.task.module)
        if node.task.cmd and node.kind != "resource":
            meta["infrakitchen/command"] = MetadataValue.md(
                "```sh\n" + node.task.cmd.strip() + "\n```")
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
            owners=self.get_owners(graph, node),
            kinds=self.get_kinds(graph, node),
            tags=self.get_tags(graph, node),
            metadata=self.get_metadata(graph, node),
            code_version=self.get_code_version(graph, node),
            skippable=True,
        )
