output "rds_endpoint" {
  description = "Fake RDS endpoint host name."
  value       = "${var.name}-${substr(sha1("${var.vpc_id}-${var.subnet_ids}-${null_resource.this.id}"), 0, 10)}.cluster.${var.region}.rds.amazonaws.com"
}

output "rds_port" {
  description = "Database port."
  value       = var.engine == "mysql" ? 3306 : 5432
}

output "db_password" {
  description = "Master password (sensitive)."
  value       = var.db_password
  sensitive   = true
}

output "vpc_id" {
  description = "The VPC id this module received."
  value       = var.vpc_id
}

output "subnet_ids" {
  description = "The subnet ids this module received."
  value       = var.subnet_ids
}

output "region" {
  description = "Region of the database."
  value       = var.region
}

output "tags" {
  description = "Tags the module received."
  value       = var.tags
}
