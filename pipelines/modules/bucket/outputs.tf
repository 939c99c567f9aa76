output "bucket_id" {
  description = "Fake bucket name/id: <name>-<8 hex>."
  value       = "${var.name}-${substr(sha1("${var.name}-${var.region}-${null_resource.this.id}"), 0, 8)}"
}

output "bucket_arn" {
  description = "Fake bucket ARN."
  value       = "arn:aws:s3:::${var.name}-${substr(sha1("${var.name}-${var.region}-${null_resource.this.id}"), 0, 8)}"
}

output "region" {
  description = "Region of the bucket."
  value       = var.region
}

output "tags" {
  description = "Tags the module received."
  value       = var.tags
}
