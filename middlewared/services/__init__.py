"""The core services every server has: core.*, auth.*, user.*, api_key.*, rpc.discover."""
