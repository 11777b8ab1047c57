"""Commands: the user's own shell lines run as jobs (PROTOCOL.md section 10). ``process``
spawns one child in a process group of its own and ends it, ``streams`` reads its output
and progress, ``runner`` runs a command's lines one after another; ``model``, ``book``,
``logfiles`` and ``orphans`` keep commands, their runs, their karajo-named logs and the
processes a crash left behind."""
