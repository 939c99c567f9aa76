variable "cluster_arn" {
  description = "ARN of the ECS cluster behind the load balancer (output cluster_arn of the compute module)."
  type        = string
}

variable "subnet_ids" {
  description = "Comma-joined subnet ids the load balancer is placed in."
  type        = string
}

variable "name" {
  description = "Load balancer name prefix."
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
