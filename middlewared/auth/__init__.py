"""Authentication and authorisation: users, API keys, tokens, login throttling."""
