terraform {
  required_version = ">= 1.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

locals {
  azs          = [for i in range(var.az_count) : "${var.region}${substr("abcdef", i, 1)}"]
  subnet_cidrs = [for i in range(var.az_count) : cidrsubnet(var.cidr, 8, i + 1)]
}

# Stand-in for one aws_subnet per AZ.
resource "null_resource" "this" {
  triggers = {
    vpc_id   = var.vpc_id
    cidr     = var.cidr
    az_count = tostring(var.az_count)
    region   = var.region
    env      = var.env
    tags     = jsonencode(var.tags)
  }

  provisioner "local-exec" {
    command = "echo 'Creating ${var.az_count} subnets in VPC ${var.vpc_id} (${join(",", local.azs)}: ${join(",", local.subnet_cidrs)}) env=${var.env} tags=${jsonencode(var.tags)}' && echo \"AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-unset}\""
  }

  provisioner "local-exec" {
    command = var.fail ? "echo 'aws_subnet: simulated failure in VPC ${var.vpc_id}' >&2; exit 1" : "echo 'All subnets created in VPC ${var.vpc_id}'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "echo 'Destroying subnets of VPC ${self.triggers.vpc_id}'"
  }
}
