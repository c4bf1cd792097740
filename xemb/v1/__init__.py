"""Generated gRPC stubs of the xemb.v1 API (see proto/)."""
