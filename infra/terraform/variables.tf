variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "prefix" {
  description = "Bucket name prefix (bucket names are global)."
  type        = string
  default     = "acme-shelf"
}

variable "vpc_id" {
  type = string
}

variable "private_subnet_ids" {
  type = list(string)
}

variable "worker_security_group_ids" {
  description = "Security groups of the pods (or nodes) allowed to reach Redis."
  type        = list(string)
}

variable "eks_oidc_provider_arn" {
  description = "The cluster's IAM OIDC provider, for the pods' roles (IRSA)."
  type        = string
}

variable "eks_oidc_provider_url" {
  description = "Its URL without https://, e.g. oidc.eks.eu-west-1.amazonaws.com/id/XXXX."
  type        = string
}

variable "redis_auth_token" {
  description = "ElastiCache AUTH token (16-128 characters); keep it in a secret store."
  type        = string
  sensitive   = true
}

variable "redis_node_type" {
  type    = string
  default = "cache.r7g.large"
}
