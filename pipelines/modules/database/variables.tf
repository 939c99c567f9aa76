variable "vpc_id" {
  description = "Id of the VPC the database lives in."
  type        = string
}

variable "subnet_ids" {
  description = "Comma-joined subnet ids of the DB subnet group."
  type        = string
}

variable "name" {
  description = "Database instance identifier prefix."
  type        = string
  default     = "appdb"
}

variable "engine" {
  description = "Database engine."
  type        = string
  default     = "postgres"
}

variable "db_password" {
  description = "Master password (fake). Never echoed."
  type        = string
  sensitive   = true
  default     = "ik-example-S3cret-pw"
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
