terraform {
  required_version = ">= 1.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

# Stand-in for an aws_db_instance. The password is deliberately kept out of
# triggers and commands so it never reaches a log line; changing it only
# changes the (sensitive) output, like an in-place password rotation.
resource "null_resource" "this" {
  triggers = {
    vpc_id     = var.vpc_id
    subnet_ids = var.subnet_ids
    name       = var.name
    engine     = var.engine
    region     = var.region
    env        = var.env
    tags       = jsonencode(var.tags)
  }

  provisioner "local-exec" {
    command = "echo 'Creating RDS instance ${var.name} (${var.engine}) in VPC ${var.vpc_id} subnets=${var.subnet_ids} env=${var.env} tags=${jsonencode(var.tags)}' && echo \"AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-unset}\""
  }

  provisioner "local-exec" {
    command = var.fail ? "echo 'aws_db_instance.${var.name}: simulated failure' >&2; exit 1" : "echo 'aws_db_instance.${var.name}: Creation complete'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "echo 'Destroying RDS instance ${self.triggers.name} (final snapshot skipped)'"
  }
}
