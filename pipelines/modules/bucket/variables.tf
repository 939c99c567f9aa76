variable "name" {
  description = "Bucket name prefix (lower case, digits, dots and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,40}$", var.name))
    error_message = "The name value must be 2-41 characters of a-z, 0-9, '.' and '-'."
  }
}

variable "region" {
  description = "Cloud region of the bucket (fake)."
  type        = string
  default     = "us-east-1"
}

variable "env" {
  description = "Environment name."
  type        = string
  default     = "staging"
}

variable "tags" {
  description = "Tags applied to the bucket."
  type        = map(string)
  default     = {}
}

variable "fail" {
  description = "Test hook: when true the create-time provisioner exits 1 (resource ends tainted)."
  type        = bool
  default     = false
}
