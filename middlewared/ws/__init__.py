"""WebSocket sessions: one per connection, independent of the HTTP framework."""
