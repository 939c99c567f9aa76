output "vpc_id" {
  description = "Fake VPC id, e.g. vpc-0a1b2c3d4e5f."
  value       = "vpc-${substr(sha1("${var.name}-${var.cidr}-${null_resource.this.id}"), 0, 12)}"
}

output "cidr" {
  description = "CIDR block of the VPC."
  value       = var.cidr
}

output "region" {
  description = "Region the VPC lives in."
  value       = var.region
}

output "tags" {
  description = "Tags the module received."
  value       = var.tags
}
