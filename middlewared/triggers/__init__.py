"""Triggers: jobs that start by themselves, on schedules, events, webhooks or on demand."""
