"""Notifiers: named destinations (mail, signed webhooks) told of a job's end."""

from middlewared.notify.notifier import Notifier
from middlewared.notify.service import Notifiers

__all__ = ["Notifier", "Notifiers"]
