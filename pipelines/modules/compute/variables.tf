variable "subnet_ids" {
  description = "Comma-joined subnet ids the cluster's tasks run in."
  type        = string
}

variable "rds_endpoint" {
  description = "Database endpoint the services connect to (output rds_endpoint of the database module)."
  type        = string
}

variable "cluster_name" {
  description = "ECS cluster name prefix."
  type        = string
  default     = "app"
}

variable "account_id" {
  description = "Fake AWS account id used in the ARN."
  type        = string
  default     = "123456789012"
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
