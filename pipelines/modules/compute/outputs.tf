output "cluster_arn" {
  description = "Fake ECS cluster ARN."
  value       = "arn:aws:ecs:${var.region}:${var.account_id}:cluster/${var.cluster_name}-${substr(sha1("${var.subnet_ids}-${var.rds_endpoint}-${null_resource.this.id}"), 0, 8)}"
}

output "rds_endpoint" {
  description = "The database endpoint this module received."
  value       = var.rds_endpoint
}

output "subnet_ids" {
  description = "The subnet ids this module received."
  value       = var.subnet_ids
}

output "region" {
  description = "Region of the cluster."
  value       = var.region
}

output "tags" {
  description = "Tags the module received."
  value       = var.tags
}
