"""Apps: cozy-style manifests whose services run as command jobs on triggers."""
