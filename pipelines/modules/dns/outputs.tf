output "zone_id" {
  description = "Fake hosted zone id."
  value       = "Z${upper(substr(sha1("${var.zone}-${null_resource.this.id}"), 0, 13))}"
}

output "dns_record" {
  description = "Fully qualified name of the record, e.g. app.staging.example.com."
  value       = "${null_resource.this.triggers.record_name}.${null_resource.this.triggers.zone}"
}

output "record_id" {
  description = "Fake Route 53 record id: ZONEID_name_TYPE."
  value       = "Z${upper(substr(sha1("${var.zone}-${null_resource.this.id}"), 0, 13))}_${local.fqdn}_CNAME"
}

output "alb_dns" {
  description = "The ALB DNS name this module received."
  value       = var.alb_dns
}

output "region" {
  description = "Region (echo of var.region)."
  value       = var.region
}

output "tags" {
  description = "Tags the module received."
  value       = var.tags
}
