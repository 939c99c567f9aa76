output "alb_dns" {
  description = "Fake DNS name of the load balancer."
  value       = "${var.name}-${substr(sha1("${var.cluster_arn}-${var.subnet_ids}-${null_resource.this.id}"), 0, 10)}.${var.region}.elb.amazonaws.com"
}

output "cluster_arn" {
  description = "The cluster ARN this module received."
  value       = var.cluster_arn
}

output "subnet_ids" {
  description = "The subnet ids this module received."
  value       = var.subnet_ids
}

output "region" {
  description = "Region of the load balancer."
  value       = var.region
}

output "tags" {
  description = "Tags the module received."
  value       = var.tags
}
