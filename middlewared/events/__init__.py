"""The event bus: collections publish added/changed/removed; subscriptions consume them."""

from middlewared.events.bus import Event, EventBus, Subscription

__all__ = ["Event", "EventBus", "Subscription"]
