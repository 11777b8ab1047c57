"""Hook scripts: executables in ``--trigger-dir`` named after events, run with the event's
arguments (JetStream's trigger scripts, bounded, killed at their timeout and logged)."""
