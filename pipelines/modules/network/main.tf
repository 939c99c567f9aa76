terraform {
  required_version = ">= 1.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

# Stand-in for an aws_vpc: no network, no cloud, runs in well under a second.
resource "null_resource" "this" {
  triggers = {
    name   = var.name
    cidr   = var.cidr
    region = var.region
    env    = var.env
    tags   = jsonencode(var.tags)
  }

  provisioner "local-exec" {
    command = "echo 'aws_vpc.${var.name}: Creating... cidr=${var.cidr} region=${var.region} env=${var.env} tags=${jsonencode(var.tags)}' && echo \"AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-unset}\""
  }

  provisioner "local-exec" {
    command = var.fail ? "echo 'aws_vpc.${var.name}: simulated failure' >&2; exit 1" : "echo 'aws_vpc.${var.name}: Creation complete'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "echo 'aws_vpc.${self.triggers.name}: Destroying... region=${self.triggers.region}'"
  }
}
