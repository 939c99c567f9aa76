output "subnet_ids" {
  description = "Comma-joined fake subnet ids, one per AZ."
  value       = join(",", [for i in range(var.az_count) : "subnet-${substr(sha1("${var.vpc_id}-${i}-${null_resource.this.id}"), 0, 12)}"])
}

output "subnet_cidrs" {
  description = "Comma-joined CIDR blocks of the subnets."
  value       = join(",", local.subnet_cidrs)
}

output "availability_zones" {
  description = "Comma-joined availability zones."
  value       = join(",", local.azs)
}

output "vpc_id" {
  description = "The VPC id this module received (echo of var.vpc_id)."
  value       = var.vpc_id
}

output "region" {
  description = "Region of the subnets."
  value       = var.region
}

output "tags" {
  description = "Tags the module received."
  value       = var.tags
}
