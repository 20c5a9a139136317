# The four buckets: raw photos in, artifacts keyed by photo hash, results for analysts,
# configuration (planograms, the SKU catalog). Versioned, encrypted with a key of their own,
# never public.
resource "aws_kms_key" "shelf" {
  description             = "shelf-pipeline buckets and queues"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:a key policy's "*" resource is the key itself
  #checkov:skip=CKV_AWS_356:a key policy's "*" resource is the key itself
  #checkov:skip=CKV_AWS_109:a key policy's "*" resource is the key itself
  statement {
    sid       = "AccountAdmin"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "S3SendsEncryptedEvents"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
  }
}

locals {
  buckets = {
    raw       = "${var.prefix}-raw"
    artifacts = "${var.prefix}-artifacts"
    results   = "${var.prefix}-results"
    config    = "${var.prefix}-config"
  }
}

resource "aws_s3_bucket" "shelf" {
  #checkov:skip=CKV_AWS_144:cross-region replication is a per-deployment choice, not the pipeline's
  #checkov:skip=CKV2_AWS_62:only the raw bucket notifies (below); the others need no events
  #checkov:skip=CKV_AWS_18:access logging goes to the organisation's log bucket, set outside
  for_each = local.buckets
  bucket   = each.value
}

resource "aws_s3_bucket_versioning" "shelf" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.shelf[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "shelf" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.shelf[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.shelf.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "shelf" {
  for_each                = local.buckets
  bucket                  = aws_s3_bucket.shelf[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Requests over plain HTTP are refused: a camera's upload or a worker's write could be read
# or changed on the way (downloads are checked against their ETags; uploads are not).
data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets
  statement {
    sid       = "TLSOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.shelf[each.key].arn, "${aws_s3_bucket.shelf[each.key].arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  for_each   = local.buckets
  bucket     = aws_s3_bucket.shelf[each.key].id
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.shelf]
}

resource "aws_s3_bucket_lifecycle_configuration" "shelf" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.shelf[each.key].id
  rule {
    id     = "old-versions-and-uploads"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }
}

# The events: S3 ObjectCreated under raw/ for photos, to SQS, with a dead-letter queue.
resource "aws_sqs_queue" "events_dlq" {
  name                      = "shelf-events-dlq"
  message_retention_seconds = 1209600
  kms_master_key_id         = aws_kms_key.shelf.arn
}

resource "aws_sqs_queue" "events" {
  name                       = "shelf-events"
  visibility_timeout_seconds = 60
  message_retention_seconds  = 345600
  receive_wait_time_seconds  = 20
  kms_master_key_id          = aws_kms_key.shelf.arn
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.events_dlq.arn
    maxReceiveCount     = 5
  })
}

data "aws_iam_policy_document" "s3_sends_events" {
  statement {
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]
    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.shelf["raw"].arn]
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy    = data.aws_iam_policy_document.s3_sends_events.json
}

resource "aws_s3_bucket_notification" "raw" {
  bucket = aws_s3_bucket.shelf["raw"].id
  # Every object under raw/, whatever its name: ingest tells a photo by its bytes and
  # dead-letters the rest with the reason.
  queue {
    id            = "shelf-events-uploads"
    queue_arn     = aws_sqs_queue.events.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = "raw/"
  }
  depends_on = [aws_sqs_queue_policy.events]
}
