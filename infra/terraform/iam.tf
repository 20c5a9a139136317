# Least privilege per role, for pods through IRSA: the listener reads events and heads raw
# photos (to mint their URLs); workers read raw photos and the configuration, write
# artifacts and results, and list the raw bucket's versions (reconciliation runs on the
# workers' aggregation queue); beat only puts scheduled tasks on Redis, so its role holds
# no permission at all; analysts only read results.
locals {
  raw_objects       = "${aws_s3_bucket.shelf["raw"].arn}/*"
  artifacts_objects = "${aws_s3_bucket.shelf["artifacts"].arn}/*"
  results_objects   = "${aws_s3_bucket.shelf["results"].arn}/*"
  config_objects    = "${aws_s3_bucket.shelf["config"].arn}/*"
}

data "aws_iam_policy_document" "assume" {
  for_each = toset(["shelf-listener", "shelf-worker", "shelf-beat"])
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.eks_oidc_provider_url}:sub"
      values   = ["system:serviceaccount:shelf-pipeline:${each.key}"]
    }
  }
}

resource "aws_iam_role" "shelf" {
  for_each           = data.aws_iam_policy_document.assume
  name               = each.key
  assume_role_policy = each.value.json
}

data "aws_iam_policy_document" "listener" {
  statement {
    actions = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
    "sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events.arn]
  }
  statement {
    actions   = ["sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events_dlq.arn]
  }
  statement {
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = [local.raw_objects]
  }
  statement {
    # Without it S3 answers a photo deleted before ingest with 403, which reads as an
    # expired URL and is retried; with it, 404: "photo no longer exists", at once.
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.shelf["raw"].arn]
  }
  statement {
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.shelf.arn]
  }
}

data "aws_iam_policy_document" "worker" {
  statement {
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = [local.raw_objects, local.config_objects]
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [local.artifacts_objects]
  }
  statement {
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.results_objects]
  }
  statement {
    actions   = ["s3:ListBucket"]
    # raw: so a photo deleted before its fetch is a 404 (gone), not a 403 (retried)
    resources = [aws_s3_bucket.shelf["raw"].arn, aws_s3_bucket.shelf["artifacts"].arn,
    aws_s3_bucket.shelf["results"].arn, aws_s3_bucket.shelf["config"].arn]
  }
  statement {
    # reconciliation (shelf.reconcile, on the aggregation queue) lists every upload's
    # versions: without it S3 answers 403 and no lost upload is ever found again
    actions   = ["s3:ListBucketVersions"]
    resources = [aws_s3_bucket.shelf["raw"].arn]
  }
  statement {
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.shelf.arn]
  }
}

data "aws_iam_policy_document" "analyst" {
  statement {
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.shelf["results"].arn}/compliance/*",
    "${aws_s3_bucket.shelf["results"].arn}/aggregates/*"]
  }
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.shelf["results"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["compliance/*", "aggregates/*"]
    }
  }
  statement {
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.shelf.arn]
  }
}

resource "aws_iam_role_policy" "listener" {
  role   = aws_iam_role.shelf["shelf-listener"].id
  policy = data.aws_iam_policy_document.listener.json
}

resource "aws_iam_role_policy" "worker" {
  role   = aws_iam_role.shelf["shelf-worker"].id
  policy = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_policy" "analyst" {
  name   = "shelf-analyst"
  policy = data.aws_iam_policy_document.analyst.json
}
