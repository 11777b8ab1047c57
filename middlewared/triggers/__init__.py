"""Triggers' pure parts: durations, schedules and event rules, parsed once when a trigger is
created and computed without I/O (the engine that stores and fires triggers uses them)."""
