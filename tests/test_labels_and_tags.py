"""Labels and tags live on the record: its own, and the inherited ones with the ancestor
each came from, whether or not the module takes a `tags` variable; `ik resources` filters
by label."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import FIXTURES, IkEnv, write_pipeline

STEP = FIXTURES / "modules" / "step"


def _tagless_module(root: Path) -> Path:
    """A module without a `tags` variable: inherited tags cannot reach it as a variable."""
    module = root / "tagless"
    module.mkdir()
    (module / "main.tf").write_text(
        'terraform {\n  required_providers {\n'
        '    null = { source = "hashicorp/null", version = "2.1.2" }\n  }\n}\n'
        'variable "name" { type = string }\n'
        'resource "null_resource" "this" {\n  triggers = { name = var.name }\n}\n'
        'output "name" { value = var.name }\n')
    return module


def test_the_record_keeps_labels_and_inherited_tags(ik_env: IkEnv, tmp_path: Path) -> None:
    tagless = _tagless_module(tmp_path)
    write_pipeline(ik_env.pipelines, "tagged", f"""
name = "tagged"
allow_external_modules = true
[tasks.network]
module = "{STEP}"
variables = {{ name = "network" }}
labels = {{ team = "platform", tier = "core" }}
dependency_tags = [
  {{ name = "cost_center", value = "cc-42", inherited_by_children = true }},
  {{ name = "owner", value = "net-team" }},
]
dependency_configs = [{{ name = "region", value = "eu-west-1", inherited_by_children = true }}]
[tasks.app]
module = "{tagless}"
depends_on = ["network"]
variables = {{ name = "app" }}
labels = {{ team = "apps" }}
dependency_tags = [{{ name = "service", value = "shop" }}]
""")
    ik_env.ik("run", "tagged")

    network = ik_env.inspect("tagged", "network")
    assert network["labels"] == {"team": "platform", "tier": "core"}
    assert network["tags"]["dependency_tags"] == [
        {"name": "cost_center", "value": "cc-42", "inherited_by_children": True},
        {"name": "owner", "value": "net-team", "inherited_by_children": False}]
    assert network["tags"]["inherited_tags"] == []

    app = ik_env.inspect("tagged", "app")
    assert app["labels"] == {"team": "apps"}
    # the module has no `tags` variable, and the record still knows what it inherits
    assert app["tags"]["inherited_tags"] == [
        {"name": "cost_center", "value": "cc-42", "from": "network"}]
    assert app["tags"]["inherited_configs"] == [
        {"name": "region", "value": "eu-west-1", "from": "network"}]
    assert app["tags"]["effective_tags"] == {"cost_center": "cc-42", "service": "shop"}
    assert "tags" not in app["variables"]

    listed = json.loads(ik_env.ik("resources", "--label", "team=platform", "--json").stdout)
    assert [(r["task"], r["labels"]["tier"]) for r in listed] == [("network", "core")]
    both = json.loads(ik_env.ik("resources", "--label", "team=apps", "--label", "tier=core",
                                "--json").stdout)
    assert both == []  # every --label must match
    table = ik_env.ik("resources", "--label", "team=apps").stdout
    assert "team=apps" in table and "network" not in table
    bad = ik_env.ik("resources", "--label", "team", check=False)
    assert bad.returncode == 1 and "--label expects KEY=VALUE" in bad.stderr
