"""keyplane: a local key management service speaking the AWS KMS protocol."""
