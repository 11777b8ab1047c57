"""The aiohttp application: the only layer that knows aiohttp."""
