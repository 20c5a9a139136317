# The broker: ElastiCache Redis with TLS in transit, encryption at rest and an AUTH token,
# reachable only from the workers' security groups, with a replica for failover.
resource "aws_elasticache_subnet_group" "shelf" {
  name       = "shelf-redis"
  subnet_ids = var.private_subnet_ids
}

resource "aws_security_group" "redis" {
  name        = "shelf-redis"
  description = "Redis for shelf-pipeline: from the workers only"
  vpc_id      = var.vpc_id
  ingress {
    description     = "Redis TLS from the pipeline's pods"
    from_port       = 6379
    to_port         = 6379
    protocol        = "tcp"
    security_groups = var.worker_security_group_ids
  }
  egress {
    description = "Replication inside the VPC"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }
}

data "aws_vpc" "this" {
  id = var.vpc_id
}

resource "aws_elasticache_replication_group" "shelf" {
  replication_group_id       = "shelf-redis"
  description                = "shelf-pipeline broker and claims"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis_node_type
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.shelf.name
  security_group_ids         = [aws_security_group.redis.id]
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.shelf.arn
  transit_encryption_enabled = true
  auth_token                 = var.redis_auth_token
  snapshot_retention_limit   = 3
  # noeviction: a queued task is never dropped under memory pressure.
  parameter_group_name = aws_elasticache_parameter_group.shelf.name
}

resource "aws_elasticache_parameter_group" "shelf" {
  name   = "shelf-redis7"
  family = "redis7"
  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }
}
