"""The feedback & analytics gRPC server: servicers, service rules and the composition root."""
