"""Raw multipart upload requests, for tests that cut them short or stall them."""

from __future__ import annotations

import base64
import json

from tests.serverproc import ServerProc


def upload_start(server: ServerProc, dest: str, files: list[bytes], declared: int) -> bytes:
    """The head and start of a multipart upload whose Content-Length promises more."""
    boundary = "XyZdisconnect"
    data = json.dumps({"method": "filesystem.put", "params": [dest]})
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="data"\r\n\r\n{data}\r\n'.encode()
    for i, content in enumerate(files):
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f{i}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + content
        if i < len(files) - 1:
            body += b"\r\n"
    auth = base64.b64encode(f"root:{server.password}".encode()).decode()
    head = (
        f"POST /_upload HTTP/1.1\r\nHost: {server.host}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body) + declared}\r\n\r\n"
    ).encode()
    return head + body
