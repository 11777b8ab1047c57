"""JSON-RPC plumbing: params schemas, binding and dispatch."""
