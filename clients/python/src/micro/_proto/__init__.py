"""Generated gRPC stubs of micro's proxy API (proto/micro/v1); do not edit.

Regenerate with clients/python/scripts/generate.sh.
"""
