"""Validation rules (`rules = { VAR = { regex, min_length, max_length, min, max, options } }`):
`ik validate` refuses unusable rules and values known before a run; a run refuses a resolved
value that breaks a rule before any tofu runs, naming task, variable, rule and value, and a
sensitive value never appears."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import IkEnv, _apply_to_this_process, make_ik_env, write_pipeline

MODULE_TF = """
terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}

variable "name" { type = string }
variable "size" {
  type    = number
  default = 1
}
variable "tier" {
  type    = string
  default = "small"
}
variable "token" {
  type      = string
  default   = "default-token-0"
  sensitive = true
}

resource "null_resource" "this" {
  triggers = { name = var.name, size = var.size, tier = var.tier, token = var.token }
}

output "id" { value = null_resource.this.id }
"""


@pytest.fixture
def env(tmp_path: Path, toolchain, pipelines_copy: Path, monkeypatch) -> IkEnv:
    """An isolated home whose pipelines dir holds only `modules/box`."""
    for file in pipelines_copy.glob("*.toml"):
        file.unlink()
    shutil.rmtree(pipelines_copy / "modules")
    (pipelines_copy / "modules" / "box").mkdir(parents=True)
    (pipelines_copy / "modules" / "box" / "main.tf").write_text(MODULE_TF)
    ik_env = make_ik_env(tmp_path, toolchain, pipelines_copy)
    ik_env.env["INFRAKITCHEN_EXECUTOR"] = "in_process"
    _apply_to_this_process(ik_env, monkeypatch)
    return ik_env


def _validate(env: IkEnv, name: str, text: str) -> list[str]:
    """`ik validate` of the pipeline; its problems without the file prefix ([] when ok)."""
    path = write_pipeline(env.pipelines, name, text)
    result = env.ik("validate", str(path), check=False)
    assert "Traceback" not in result.stderr
    if result.returncode == 0:
        return []
    return [line.removeprefix(f"{path}: ") for line in result.stderr.strip().splitlines()]


def test_a_rule_that_cannot_work_is_refused(env: IkEnv) -> None:
    problems = _validate(env, "badrules", r"""
name = "badrules"
[tasks.box]
module = "modules/box"
variables = { name = "ok" }
[tasks.box.rules]
name = { regex = "([a-z" }
size = { min = 10, max = 1 }
tier = { options = [] }
token = { min_length = 9, max_length = 3 }
nme = { max_length = 5 }
[tasks.choice]
module = "modules/box"
variables = { name = "ok" }
rules = { tier = { options = ["small", "gigantic"], max_length = 5 }, size = {} }
[tasks.echo]
cmd = "echo hi"
rules = { x = { min = 1 } }
""")
    assert problems == [
        "task 'box': rules.name: regex '([a-z' does not compile: unterminated character "
        "set at position 1",
        "task 'box': rules.size: min 10 is greater than max 1: no value could pass",
        "task 'box': rules.tier: options is empty: no value could pass",
        "task 'box': rules.token: min_length 9 is greater than max_length 3: no value "
        "could pass",
        "task 'box': rules names 'nme', which module 'modules/box' does not declare (did "
        "you mean 'name'?)",
        "task 'choice': rules.tier: option 'gigantic' can never be chosen: it breaks "
        "max_length 5",
        "task 'choice': rules.size: sets no check (use regex, min_length, max_length, min, "
        "max or options)",
        "task 'echo': `rules` apply to the variables of resource and abstract tasks",
    ]


def test_validate_checks_literals_and_var_defaults_but_not_run_time_values(env: IkEnv
                                                                          ) -> None:
    problems = _validate(env, "values", """
name = "values"
[vars]
TIER = "medium"
PREFIX = "Web"
[environments.dev]
[environments.prod]
TIER = "gigantic"
[tasks.seed]
cmd = "echo Bad_Name"
register = "seeded"
[tasks.literal]
module = "modules/box"
variables = { name = "ok", size = 50, token = "short" }
rules = { size = { max = 10 }, token = { min_length = 12 } }
[tasks.from-vars]
module = "modules/box"
variables = { name = "{{.PREFIX}}-app", tier = "{{.TIER}}" }
rules = { name = { regex = "^[a-z-]+$" }, tier = { options = ["small", "medium"] } }
[tasks.at-run-time]
module = "modules/box"
depends_on = ["seed"]
variables = { name = "{{.seeded}}" }
rules = { name = { regex = "^[a-z-]+$" } }
""")
    assert problems == [
        "task 'literal': variable 'size' = 50 breaks its rule max 10 (it is greater)",
        "task 'literal': variable 'token' = (sensitive) breaks its rule min_length 12",
        "task 'from-vars': variable 'name' = 'Web-app' breaks its rule regex '^[a-z-]+$' "
        "(does not match)",
        "task 'from-vars': variable 'tier' = 'gigantic' breaks its rule options [small, "
        "medium] (not one of them) in environment 'prod'",
    ]  # `at-run-time` reads a registered value: checked when the run resolves it
    assert all("short" not in line for line in problems)


def _audit_text(env: IkEnv) -> str:
    return env.ik("audit", "--json").stdout


def test_a_run_refuses_a_resolved_value_before_any_tofu(env: IkEnv) -> None:
    path = write_pipeline(env.pipelines, "late", """
name = "late"
[tasks.seed]
cmd = "echo Bad_Name"
register = "seeded"
[tasks.box]
module = "modules/box"
depends_on = ["seed"]
variables = { name = "{{.seeded}}" }
rules = { name = { regex = "^[a-z-]+$" }, token = { min_length = 12 } }
""")
    assert env.ik("validate", str(path)).returncode == 0  # known only at run time

    refused = env.ik("run", "late", check=False)
    assert refused.returncode != 0
    assert ("box: task 'box': variable 'name' = 'Bad_Name' breaks its rule regex "
            "'^[a-z-]+$' (does not match)") in refused.stdout + refused.stderr
    workdir = env.home / "work" / "late" / "default" / "box"
    assert not (workdir / "terraform.tfvars.json").exists()  # tofu never saw the values
    assert not (workdir / "terraform.tfstate").exists()
    assert env.inspect("late", "box")["state"] != "provisioned"
    assert "provision_refused" in _audit_text(env)


def test_a_sensitive_value_is_masked_and_a_good_value_applies(env: IkEnv) -> None:
    write_pipeline(env.pipelines, "secretive", """
name = "secretive"
[tasks.box]
module = "modules/box"
variables = { name = "app" }
rules = { token = { min_length = 12 }, size = { min = 1, max = 10 } }
""")
    secret = "tiny-secret"  # 11 characters: one short
    refused = env.ik("run", "secretive", "--var", f"token={secret}", check=False)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert ("task 'box': variable 'token' = (sensitive) breaks its rule min_length 12"
            in output)
    assert secret not in output
    assert secret not in _audit_text(env)

    too_big = env.ik("run", "secretive", "--var", "size=11", check=False)
    assert too_big.returncode != 0
    assert "variable 'size' = '11' breaks its rule max 10 (it is greater)" in (
        too_big.stdout + too_big.stderr)  # `--var` text read as a number

    env.ik("run", "secretive", "--var", "token=long-enough-secret", "--var", "size=10")
    record = env.inspect("secretive", "box")
    assert record["state"] == "provisioned"
    assert record["variables"]["token"] == "(sensitive)"
    assert "long-enough-secret" not in json.dumps(record)
