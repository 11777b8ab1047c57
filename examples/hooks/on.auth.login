#!/usr/bin/env python3
"""on.auth.login CALL STATUS MESSAGE RESULT (with --trigger-on-api): note failed logins.
The password is never given to a script: it shows as "********"."""

import json
import sys

call, status, message, result = sys.argv[1:]
username = json.loads(call)["parameters"][0]
if status != "success" or json.loads(result) is not True:
    with open("logins.log", "a") as log:
        log.write(f"failed login as {username}: {status} {message} {result}\n")
