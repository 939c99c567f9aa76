terraform {
  required_version = ">= 1.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

# Stand-in for an aws_ecs_cluster + capacity providers.
resource "null_resource" "this" {
  triggers = {
    subnet_ids   = var.subnet_ids
    rds_endpoint = var.rds_endpoint
    cluster_name = var.cluster_name
    account_id   = var.account_id
    region       = var.region
    env          = var.env
    tags         = jsonencode(var.tags)
  }

  provisioner "local-exec" {
    command = "echo 'Creating ECS cluster ${var.cluster_name} in subnets ${var.subnet_ids}, DATABASE_HOST=${var.rds_endpoint} env=${var.env} tags=${jsonencode(var.tags)}' && echo \"AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-unset}\""
  }

  provisioner "local-exec" {
    command = var.fail ? "echo 'aws_ecs_cluster.${var.cluster_name}: simulated failure' >&2; exit 1" : "echo 'aws_ecs_cluster.${var.cluster_name}: Creation complete'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "echo 'Destroying ECS cluster ${self.triggers.cluster_name}'"
  }
}
