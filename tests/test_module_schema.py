"""Module schemas read with a real HCL parser: braces inside strings and heredocs, nested
`validation` blocks, sensitive and required variables, outputs; shown by `ik inspect`,
used by the required/sensitive checks of a real apply, and a file that does not parse is
one line naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infrakitchen_dagster.module_schema import ModuleSchemaError, module_schema

from .conftest import IkEnv, _apply_to_this_process, make_ik_env, write_pipeline

#: Every string with a `}` before the attribute that matters: a brace-counting reader ends
#: the block at the first `}` and misses `default` (name looks required) and `sensitive`
#: (token looks public).
TRICKY_TF = """
terraform {
  required_providers {
    null = { source = "hashicorp/null", version = "2.1.2" }
  }
}

variable "name" {
  type        = string
  description = "Name; a } here ended the old reader's block early { really"
  default     = "web"
}

variable "token" {
  description = "A credential: } { braces first, then the flag"
  type        = string
  default     = ""
  sensitive   = true
}

variable "size" {
  type        = number
  description = <<-EOT
    Heredoc with a } inside
  EOT
  validation {
    condition     = var.size > 0
    error_message = "Size must be positive (a } is fine here)."
  }
}

variable owner {
  type = string
}

variable "settings" {
  type    = object({ tier = string, replicas = number })
  default = { tier = "small", replicas = 1 }
}

resource "null_resource" "this" {
  triggers = {
    name  = var.name
    token = var.token
    size  = var.size
    owner = var.owner
  }
}

output "id" {
  value       = null_resource.this.id
  description = "The resource id {not a block}"
}

output "token" {
  value     = var.token
  sensitive = true
}
"""

SECRET = "s3cr3t-token-value"


@pytest.fixture
def env(tmp_path: Path, toolchain, pipelines_copy: Path, monkeypatch) -> IkEnv:
    """An isolated home with an empty pipelines dir and a `modules/tricky` module."""
    for file in pipelines_copy.glob("*.toml"):
        file.unlink()
    shutil.rmtree(pipelines_copy / "modules")
    module = pipelines_copy / "modules" / "tricky"
    module.mkdir(parents=True)
    (module / "main.tf").write_text(TRICKY_TF)
    ik_env = make_ik_env(tmp_path, toolchain, pipelines_copy)
    ik_env.env["INFRAKITCHEN_EXECUTOR"] = "in_process"
    _apply_to_this_process(ik_env, monkeypatch)
    return ik_env


def _pipeline(env: IkEnv, variables: str) -> Path:
    return write_pipeline(env.pipelines, "tricky", f"""
name = "tricky"
[tasks.app]
module = "modules/tricky"
variables = {{ {variables} }}
""")


def test_braces_in_strings_do_not_hide_defaults_or_sensitive_flags(env: IkEnv) -> None:
    _pipeline(env, f'owner = "ops", size = 2, token = "{SECRET}"')
    run = env.ik("run", "tricky")  # `name` has a default: not refused as missing
    assert SECRET not in run.stdout + run.stderr

    record = env.inspect("tricky", "app")
    assert record["state"] == "provisioned"
    assert record["variables"]["token"] == "(sensitive)"  # declared so after a `}`
    assert record["outputs"]["token"] == "(sensitive)"
    assert SECRET not in json.dumps(record)

    schema = record["schema"]
    assert schema["variables"]["name"] == {
        "type": "string", "description": "Name; a } here ended the old reader's block early "
                                         "{ really",
        "default": "web", "required": False, "sensitive": False, "nullable": True,
        "validations": []}
    assert schema["variables"]["size"]["description"] == "Heredoc with a } inside"
    assert schema["variables"]["size"]["required"] is True
    assert schema["variables"]["size"]["validations"] == [
        {"condition": "var.size > 0",
         "error_message": "Size must be positive (a } is fine here)."}]
    assert schema["variables"]["owner"]["required"] is True
    assert schema["variables"]["token"]["sensitive"] is True
    assert schema["variables"]["token"]["default"] == "(sensitive)"
    assert schema["variables"]["settings"]["type"] == (
        "object({tier = string, replicas = number})")
    assert schema["variables"]["settings"]["default"] == {"tier": "small", "replicas": 1}
    assert schema["outputs"] == {
        "id": {"description": "The resource id {not a block}", "sensitive": False},
        "token": {"description": None, "sensitive": True}}

    shown = env.ik("inspect", "tricky/app").stdout
    assert "module variables:" in shown and "module outputs:" in shown
    assert "  owner: string (required)" in shown
    assert '  name: string (default "web") - Name; a } here ended' in shown
    assert "  token (sensitive)" in shown


def test_only_variables_without_default_are_required(env: IkEnv) -> None:
    _pipeline(env, 'owner = "ops"')
    refused = env.ik("run", "tricky", check=False)
    assert refused.returncode != 0
    output = refused.stdout + refused.stderr
    assert "requires variables that are not set: size (" in output  # not `name`, `token`
    workdir = env.home / "work" / "tricky" / "default" / "app"
    assert not (workdir / "terraform.tfstate").exists()  # refused before any apply


def test_a_file_that_does_not_parse_is_one_line_naming_it(env: IkEnv) -> None:
    broken = env.pipelines / "modules" / "tricky" / "broken.tf"
    broken.write_text('variable "x" {\n  default = "never closed\n}\n')
    path = _pipeline(env, 'owner = "ops", size = 1')
    result = env.ik("validate", str(path), check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: task 'app': module 'modules/tricky': {broken}: "
                               "not valid HCL at line 2")
    assert "Traceback" not in result.stderr

    shown = env.ik("inspect", "tricky/app", check=False)  # no record yet: one clear line
    assert shown.returncode == 1 and "Traceback" not in shown.stderr


def test_schema_is_parsed_once_per_content(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text('variable "a" {\n  description = "x }"\n}\n')
    first = module_schema(tmp_path)
    assert module_schema(tmp_path) is first  # same content: the parsed schema is reused
    assert first.required_variables == {"a"}

    (tmp_path / "main.tf").write_text('variable "a" {\n  default = 1\n}\n')
    changed = module_schema(tmp_path)
    assert changed is not first and changed.required_variables == set()

    (tmp_path / "main.tf").write_text('variable "a" {\n')
    for _ in range(2):  # a broken file stays one clear error, each time it is asked for
        with pytest.raises(ModuleSchemaError, match=r"main\.tf: not valid HCL at line 2"):
            module_schema(tmp_path)


def test_json_configuration_and_override_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "main.tf.json").write_text(json.dumps({
        "variable": {"key": {"type": "string", "sensitive": True},
                     "zone": {"type": "string", "default": "a", "nullable": False}},
        "output": {"arn": {"value": "x", "description": "ARN"}}}))
    (tmp_path / "zone_override.tf").write_text('variable "zone" {\n  sensitive = true\n}\n')
    schema = module_schema(tmp_path)
    assert schema.required_variables == {"key"}
    assert schema.sensitive_variables == {"key", "zone"}  # the override merged last
    assert schema.variables["zone"].default == "a"
    assert not schema.variables["zone"].nullable and schema.variables["key"].nullable
    assert schema.outputs["arn"].description == "ARN"
