"""karajo's configuration (``--karajo-config FILE``) loaded as it is: its INI dialect
(``ini``) turned into declared commands, triggers and notifiers (``mapping``)."""
