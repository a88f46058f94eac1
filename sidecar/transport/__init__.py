"""The only package that imports grpc: converts messages and delegates to the pipeline."""
