"""File uploads to ``POST /classify``: a ``multipart/form-data`` body turned into the JSON body of
the image request, ``{"images": ["<base64>", ...]}``, one entry per file part, in order.

The request guard (serving/guard.py) calls this before the service sees the request, so an
upload and a JSON request are validated by the same request model and answered the same way:
the image task's schema says which image is bad (``images[1]: ...``), counting file parts in
the order they were sent.

Parsing is python-multipart's streaming parser (the one Starlette uses; BentoML depends on it).
Its ``finalize`` does not check that the closing boundary arrived, so this module does: a
truncated upload is a 400, not a request with its last image cut short.

What counts as an image: a part whose ``Content-Disposition`` has a ``filename`` (``curl -F
images=@photo.png``, a browser's file input, ``httpx.post(files=...)``); its field name does not
matter. A part without one is an ordinary form field, and is refused (400) rather than ignored: a
forgotten ``@`` (``-F images=photo.png``) sends the *name* of the file as text, and silently
dropping it would answer a request that classified nothing, or fewer images than were sent.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from tuneops.components.errors import one_line

#: the JSON name of the image request's list (components/tasks/image/schema.py publishes ``inputs`` under it)
IMAGE_FIELD = "images"
FORM_DATA = b"multipart/form-data"
# Transfer encodings that leave the bytes as they are; RFC 7578 deprecates the others.
_IDENTITY_ENCODINGS = frozenset({b"", b"binary", b"8bit", b"7bit"})


class UploadProblem(ValueError):
    """Why a multipart body cannot be read as image uploads (one line), with the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class UploadedFile:
    """One file part of an upload."""

    field: str
    filename: str
    data: bytes


def media_type(content_type: bytes | None) -> bytes:
    """The lower-cased media type of a Content-Type header, without its parameters."""
    return (content_type or b"").split(b";", 1)[0].strip().lower()


def is_multipart(content_type: bytes | None) -> bool:
    """True for any ``multipart/*`` body (form-data or another kind)."""
    return media_type(content_type).startswith(b"multipart/")


def file_parts(body: bytes, content_type: bytes, max_files: int, max_file_bytes: int) -> list[UploadedFile]:
    """The file parts of a complete ``multipart/form-data`` body, in order.

    Raises UploadProblem: 400 for a body that is not well-formed multipart/form-data (no
    boundary, a truncated body, a part without ``Content-Disposition: form-data``, a form field
    that is not a file, an encoded part), 400 for more than ``max_files`` files, 413 for a file
    over ``max_file_bytes`` (found while parsing, before the rest is copied).
    """
    kind, options = parse_options_header(content_type)
    if kind != FORM_DATA:
        raise UploadProblem(f"{kind.decode('latin-1') or 'no content type'} is not an upload this service reads; "
                            "send multipart/form-data or JSON", status=415)
    boundary = options.get(b"boundary", b"")
    if not boundary:
        raise UploadProblem("multipart/form-data without a boundary parameter in its Content-Type")
    if not body:
        raise UploadProblem("empty multipart body; send at least one image file")
    reader = _PartReader(max_files, max_file_bytes)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        parser.write(body)
        parser.finalize()
    except UploadProblem:
        raise
    except FormParserError as error:  # malformed framing, headers over python-multipart's limits, long boundary
        raise UploadProblem(f"malformed multipart body: {one_line(error)}") from None
    if not reader.ended:
        raise UploadProblem("multipart body ends before its closing boundary (truncated upload?)")
    return reader.files


def upload_to_json(files: list[UploadedFile], key: str = IMAGE_FIELD) -> bytes:
    """The JSON request body ``{key: [base64 of each file, ...]}`` (ASCII, no escaping needed)."""
    encoded = b'", "'.join(base64.b64encode(item.data) for item in files)
    return b'{"' + key.encode("ascii") + b'": [' + (b'"' + encoded + b'"' if files else b"") + b"]}"


@dataclass
class _PartReader:
    """python-multipart callbacks that collect file parts and refuse everything else."""

    max_files: int
    max_file_bytes: int
    files: list[UploadedFile] = field(default_factory=list)
    ended: bool = False
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _header_name: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)
    _current: UploadedFile | None = None
    _chunks: list[bytes] = field(default_factory=list)
    _size: int = 0
    _parts: int = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._parts += 1
        self._headers, self._chunks, self._size, self._current = {}, [], 0, None

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).strip().lower()] = bytes(self._header_value).strip()
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        where = f"multipart part {self._parts}"
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data":
            raise UploadProblem(f"{where} has no 'Content-Disposition: form-data' header")
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            raise UploadProblem(f"{where} (field {name!r}) is a form field, not a file; send each image as a "
                                "file part (curl -F 'images=@photo.png')")
        encoding = self._headers.get(b"content-transfer-encoding", b"").lower()
        if encoding not in _IDENTITY_ENCODINGS:
            raise UploadProblem(f"{where} uses Content-Transfer-Encoding {encoding.decode('latin-1')}; "
                                "send the file's own bytes")
        if len(self.files) >= self.max_files:
            raise UploadProblem(f"{IMAGE_FIELD} holds more than {self.max_files} files; "
                                f"at most {self.max_files} per request")
        filename = options[b"filename"].decode("utf-8", "replace")
        self._current = UploadedFile(field=name, filename=filename, data=b"")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._size > self.max_file_bytes:
            index = len(self.files)
            name = self._current.filename if self._current else ""
            raise UploadProblem(f"{IMAGE_FIELD}[{index}] ({name}) is over the limit of {self.max_file_bytes:,} "
                                "bytes per image; send fewer or smaller images", status=413)
        self._chunks.append(data[start:end])

    def _part_end(self) -> None:
        if self._current is None:  # python-multipart ends a part whose headers never finished
            raise UploadProblem(f"multipart part {self._parts} ends inside its headers")
        self._current.data = b"".join(self._chunks)
        self.files.append(self._current)
        self._current, self._chunks = None, []

    def _end(self) -> None:
        self.ended = True
