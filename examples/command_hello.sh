#!/bin/sh
# A command that reports progress, writes to its log and calls back into the API with its
# run's token; then run it with a progress bar and its log streamed, and list its logs.
# The server and an administrator's credentials come from MIDCLT_URL, MIDCLT_USER and
# MIDCLT_PASSWORD.
set -e
midclt call command.create "$(cat <<'JSON'
{"name": "hello", "allow": ["core.ping"], "env": {"GREETING": "hello"},
 "commands": ["echo \"$GREETING from run $MIDDLEWARED_COUNTER\"",
              "echo '{\"percent\": 50, \"description\": \"halfway\"}' >&3",
              "midclt call core.ping"]}
JSON
)" > /dev/null
midclt command run hello
midclt call command.logs hello
