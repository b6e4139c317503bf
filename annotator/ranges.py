"""Serving media files with HTTP Range support, so the player can seek."""

from __future__ import annotations

import mimetypes
import os
import re

from django.http import FileResponse, HttpResponse

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Slice:
    """A file object limited to ``length`` bytes from ``start``."""

    def __init__(self, path: str, start: int, length: int, chunk: int = 256 * 1024):
        self.fh = open(path, "rb")  # noqa: SIM115 - closed by FileResponse
        self.fh.seek(start)
        self.remaining = length
        self.chunk = chunk

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        size = self.remaining if size < 0 else min(size, self.remaining)
        data = self.fh.read(min(size, self.chunk))
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        self.fh.close()


def ranged_file_response(request, path: str, filename: str | None = None):
    size = os.path.getsize(path)
    ctype = mimetypes.guess_type(filename or path)[0] or "application/octet-stream"
    match = _RANGE.match(request.headers.get("Range", "").strip())
    if not match or (not match.group(1) and not match.group(2)):
        resp = FileResponse(open(path, "rb"), content_type=ctype)  # noqa: SIM115
        resp["Accept-Ranges"] = "bytes"
        return resp
    first, last = match.groups()
    if first:
        start, end = int(first), int(last) if last else size - 1
    else:  # a suffix range: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    if start >= size or start > end:
        resp = HttpResponse(status=416)
        resp["Content-Range"] = f"bytes */{size}"
        return resp
    end = min(end, size - 1)
    resp = FileResponse(
        _Slice(path, start, end - start + 1), content_type=ctype, status=206
    )
    resp["Content-Length"] = str(end - start + 1)
    resp["Content-Range"] = f"bytes {start}-{end}/{size}"
    resp["Accept-Ranges"] = "bytes"
    return resp
