variable "name" {
  description = "Logical name of the VPC."
  type        = string
  default     = "main"
}

variable "cidr" {
  description = "IPv4 CIDR block of the VPC."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr, 0))
    error_message = "The cidr value must be a valid IPv4 CIDR block, e.g. 10.0.0.0/16."
  }
}

variable "region" {
  description = "Cloud region (fake; nothing leaves this machine)."
  type        = string
  default     = "us-east-1"
}

variable "env" {
  description = "Environment name (staging, prod, ...)."
  type        = string
  default     = "staging"
}

variable "tags" {
  description = "Tags applied to every resource (dependency_tags are merged in here)."
  type        = map(string)
  default     = {}
}

variable "fail" {
  description = "Test hook: when true the create-time provisioner exits 1 (resource ends tainted)."
  type        = bool
  default     = false
}
