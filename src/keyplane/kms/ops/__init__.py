"""KMS operations, one module per resource family, one function per operation."""
