output "role_arns" {
  description = "For the service accounts' eks.amazonaws.com/role-arn annotations."
  value       = { for k, r in aws_iam_role.shelf : k => r.arn }
}

output "events_queue_url" {
  value = aws_sqs_queue.events.id
}

output "redis_endpoint" {
  description = "SHELF_REDIS__URL = rediss://:<auth token>@<this>:6379/1?ssl_cert_reqs=required"
  value       = aws_elasticache_replication_group.shelf.primary_endpoint_address
}

output "buckets" {
  value = local.buckets
}
