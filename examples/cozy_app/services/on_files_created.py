"""A cozy-style service: told of the files created in a burst (one run per debounce
window), it reads each one's size back through the API with its own token, and shows
that the token stops at the app's permissions."""

import json
import os
import subprocess


def midclt(*args: str) -> subprocess.CompletedProcess[str]:
    # midclt finds MIDDLEWARED_URL and MIDDLEWARED_TOKEN in the environment.
    return subprocess.run(["midclt", *args], capture_output=True, text=True, check=False)


fields = json.loads(os.environ["MIDDLEWARED_FIELDS"])
paths = [event["id"] for event in fields.get("events", [])]
print(f"{len(paths)} new files")
for path in paths:
    stat = json.loads(midclt("call", "filesystem.stat", path).stdout)
    print(f"{stat['name']}: {stat['size']} bytes")
refused = midclt("call", "user.query")
print(f"user.query refused: {refused.returncode != 0}")
