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
  fqdn = "${var.record_name}.${var.zone}"
}

# Stand-in for an aws_route53_record (CNAME -> ALB).
resource "null_resource" "this" {
  triggers = {
    alb_dns     = var.alb_dns
    zone        = var.zone
    record_name = var.record_name
    region      = var.region
    env         = var.env
    tags        = jsonencode(var.tags)
  }

  provisioner "local-exec" {
    command = "echo 'Creating record ${local.fqdn} CNAME ${var.alb_dns} env=${var.env} tags=${jsonencode(var.tags)}' && echo \"AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-unset}\""
  }

  provisioner "local-exec" {
    command = var.fail ? "echo 'aws_route53_record: simulated failure for ${local.fqdn}' >&2; exit 1" : "echo 'aws_route53_record: ${local.fqdn} Creation complete'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "echo 'Deleting record ${self.triggers.record_name}.${self.triggers.zone}'"
  }
}
