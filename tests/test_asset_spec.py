"""What the Dagster catalog shows of a pipeline, read from the definitions: the module's
variables and outputs in the description, owners Dagster accepts, group = pipeline name,
kinds and tags to filter by, readable command descriptions, and a git source that is not
fetched while definitions load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, AssetSpec

from infrakitchen_dagster import build_definitions

from .conftest import IkEnv, _apply_to_this_process, make_ik_env, write_pipeline

MODULE_TF = """
variable "name" {
  type        = string
  description = "Service name | shown in a table, with a } brace"
}
variable "password" {
  type      = string
  default   = "hunter2-default"
  sensitive = true
}
variable "replicas" {
  type    = number
  default = 2
}
output "endpoint" {
  value       = "x"
  description = "Where the service answers"
}
output "secret" {
  value     = "y"
  sensitive = true
}
"""

PIPELINE = """
name = "web-stack"
owners = ["alice", "bob@example.com", "team:net", "alice"]
tags = ["infrastructure"]

[tasks.prepare]
name = "Prepare"
cmd = '''
# a comment line is not what the task does
echo "naming {{.ENV}}" && printf '%s\\n' web
echo second
'''
register = "prefix"

[tasks.service]
name = "Web service"
description = "The public web tier."
module = "modules/svc"
depends_on = ["prepare"]
variables = { name = "web" }
labels = { team = "Platform Ops", "app.example.com/tier" = "gold", "dagster/kind" = "x", cost = "" }

[tasks.registry]
abstract = true
"""


@pytest.fixture
def env(tmp_path: Path, toolchain, pipelines_copy: Path, monkeypatch) -> IkEnv:
    for file in pipelines_copy.glob("*.toml"):
        file.unlink()
    shutil.rmtree(pipelines_copy / "modules")
    (pipelines_copy / "modules" / "svc").mkdir(parents=True)
    (pipelines_copy / "modules" / "svc" / "main.tf").write_text(MODULE_TF)
    ik_env = make_ik_env(tmp_path, toolchain, pipelines_copy)
    _apply_to_this_process(ik_env, monkeypatch)
    write_pipeline(pipelines_copy, "web-stack", PIPELINE)
    return ik_env


def _specs(env: IkEnv) -> dict[AssetKey, AssetSpec]:
    return {spec.key: spec for spec in build_definitions(env.pipelines).resolve_all_asset_specs()}


def test_resource_description_tables_variables_and_outputs(env: IkEnv) -> None:
    spec = _specs(env)[AssetKey(["web-stack", "service"])]
    description = spec.description or ""
    assert description.startswith("Web service\n\nThe public web tier.\n\nModule: `modules/svc`")
    assert ("| `name` | `string` | *required* | Service name \\| shown in a table, with a } "
            "brace |") in description
    assert "| `password` (sensitive) | `string` | `(sensitive)` |  |" in description
    assert "hunter2-default" not in description
    assert "| `replicas` | `number` | `2` |  |" in description
    assert "| `endpoint` | Where the service answers |" in description
    assert "| `secret` (sensitive) |  |" in description


def test_owners_group_kinds_and_label_tags_are_valid_for_dagster(env: IkEnv) -> None:
    specs = _specs(env)
    service = specs[AssetKey(["web-stack", "service"])]
    assert service.owners == ["team:alice", "bob@example.com", "team:net"]
    assert service.group_name == "web_stack"  # Dagster group names allow no `-`
    assert service.kinds == {"terraform", "hashicorp"}
    tags = {k: v for k, v in service.tags.items() if not k.startswith("dagster/kind/")}
    assert tags == {"infrastructure": "", "team": "Platform_Ops",
                    "app.example.com/tier": "gold", "dagster_kind": "x", "cost": "",
                    "opentofu": "", "infrakitchen/kind": "resource"}
    # (an invalid key or value would have failed `AssetSpec`: it checks tags strictly)
    assert specs[AssetKey(["web-stack", "prepare"])].kinds == {"shell"}
    assert {s.group_name for s in specs.values()} == {"web_stack"}


def test_command_and_abstract_tasks_read_as_words(env: IkEnv) -> None:
    specs = _specs(env)
    prepare = specs[AssetKey(["web-stack", "prepare"])]
    assert prepare.description == (
        "Prepare\n\nRuns a shell command: `echo \"naming {{.ENV}}\" && printf '%s\\n' web` "
        "and 1 more line. Registers `prefix`.")
    command = prepare.metadata["infrakitchen/command"]
    assert "echo second" in command.value and command.value.startswith("```sh\n")
    registry = specs[AssetKey(["web-stack", "registry"])]
    assert "Abstract record" in (registry.description or "")


def test_a_git_source_is_not_fetched_while_definitions_load(env: IkEnv, tmp_path: Path
                                                           ) -> None:
    missing = tmp_path / "nowhere" / "modules.git"
    write_pipeline(env.pipelines, "remote", f"""
name = "remote"
[tasks.box]
module = "git::file://{missing}//svc?ref=v1"
""")
    spec = _specs(env)[AssetKey(["remote", "box"])]
    assert "A git source: its variables and outputs are read from the commit a run " \
           "resolves" in (spec.description or "")
    assert "`ik inspect remote/box` shows them after a run." in (spec.description or "")
    assert not (env.home / "sources").exists()  # nothing cloned, nothing fetched
