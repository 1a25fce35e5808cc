"""`make bench`: how close the service comes to an empty gRPC server and to raw SQLite inserts."""
