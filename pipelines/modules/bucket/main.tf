terraform {
  required_version = ">= 1.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

# Stand-in for an aws_s3_bucket.
resource "null_resource" "this" {
  triggers = {
    name   = var.name
    region = var.region
    env    = var.env
    tags   = jsonencode(var.tags)
  }

  provisioner "local-exec" {
    command = "echo 'Creating bucket ${var.name} in ${var.region} env=${var.env} tags=${jsonencode(var.tags)}' && echo \"AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-unset}\""
  }

  provisioner "local-exec" {
    command = var.fail ? "echo 'aws_s3_bucket.${var.name}: simulated failure' >&2; exit 1" : "echo 'aws_s3_bucket.${var.name}: Creation complete'"
  }

  provisioner "local-exec" {
    when    = destroy
    command = "echo 'Deleting bucket ${self.triggers.name} in ${self.triggers.region}'"
  }
}
