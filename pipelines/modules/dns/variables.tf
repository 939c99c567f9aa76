variable "alb_dns" {
  description = "DNS name of the load balancer the record points at (output alb_dns of the alb module)."
  type        = string
}

variable "zone" {
  description = "Hosted zone the record is created in."
  type        = string
  default     = "example.com"
}

variable "record_name" {
  description = "Record name inside the zone."
  type        = string
  default     = "app"
}

variable "region" {
  description = "Cloud region (fake)."
  type        = string
  default     = "us-east-1"
}

variable "env" {
  description = "Environment name."
  type        = string
  default     = "staging"
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}

variable "fail" {
  description = "Test hook: when true the create-time provisioner exits 1 (resource ends tainted)."
  type        = bool
  default     = false
}
