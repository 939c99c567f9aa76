variable "vpc_id" {
  description = "Id of the parent VPC (output vpc_id of the network module)."
  type        = string
}

variable "cidr" {
  description = "CIDR block of the parent VPC; one /24 per AZ is carved out of it."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr, 0))
    error_message = "The cidr value must be a valid IPv4 CIDR block, e.g. 10.0.0.0/16."
  }
}

variable "az_count" {
  description = "Number of availability zones (one subnet per AZ)."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 6
    error_message = "The az_count value must be between 1 and 6."
  }
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
