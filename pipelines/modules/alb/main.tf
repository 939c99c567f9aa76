terraform {
  required_version = ">= 1.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

# Stand-in for an aws_lb + listeners + target group.
resource "null_resource" "this" {
  triggers = {
    cluster_arn = var.cluster_arn
    subnet_ids  = var.subnet_ids
    name        = var.name
    region      = var.region
    env         = var.env
    tags        = jsonencode(var.tags)
  }

  provisioner "local-exec" {
    command = "echo 'Creating ALB ${var.name} (internet-facing) subnets=${var.subnet_ids} target=${var.cluster_arn} env=${var.env} tags=${jsonencode(var.tags)}' && echo \"AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-unset}\""
  }

  provisioner "local-exec" {
    command = var.fail ? "echo 'aws_lb.${var.name}: simulated failure' >&2; exit 1" : "echo 'aws_lb.${var.name}: Creation complete'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "echo 'Destroying ALB ${self.triggers.name}'"
  }
}
