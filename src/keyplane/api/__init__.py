"""The AWS KMS wire edge: HTTP, routing, the JSON 1.1 codec, shapes and AWS error names.

This package turns requests into calls on ``keyplane.kms`` and results back into AWS
responses. It holds no keys and makes no authorization decisions.
"""
