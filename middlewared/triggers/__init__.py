"""Triggers: jobs that start by themselves, on schedules, events, webhooks or on demand.
The pure parts (durations, schedules, event rules) are parsed once when a trigger is created;
the engine stores and fires them."""
