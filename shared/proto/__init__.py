"""Generated gRPC stubs (scripts/gen-proto.sh) for the services Isthmus components call each other on."""
