"""The request body of ``POST /classify`` for image classification: ``{"images": ["<base64>", ...]}``.

Each item is a PNG, JPEG (or another format decode.py accepts) file, base64-encoded (standard
alphabet, padded, no whitespace; a ``data:image/...;base64,`` prefix is allowed). Every image is
checked before the request reaches the batcher, so one bad image is a 400 for its own request and
never fails a batch shared with others:
  - the base64 text is no longer than ``serving.max_image_bytes`` needs (checked before decoding);
  - it decodes strictly; the header is an image within ``serving.max_image_pixels`` (read before
    any pixel is decoded, so a small 30000x30000 PNG is refused without being expanded);
  - the pixels decode completely (truncated and corrupt files are refused here, not in the batch).
Each bad item is its own validation error, located at ``images[i]``.

As for text, the service reads one field named ``inputs`` (published as ``images``): a list of
``RequestImage``, the decoded file bytes, each carrying its request's id and its drift descriptors
(measured while the image was decoded for the check, so the prediction log need not decode again).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import uuid
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from tuneops.components.request_context import REQUEST_ID
from tuneops.components.tasks.image.decode import ImageLimits, ImageProblem, decode_bytes, default_limits
from tuneops.components.tasks.image.descriptors import describe_image

if TYPE_CHECKING:
    from tuneops.components.config import ServingConfig

# An 8x8 gray checkerboard PNG: the smallest picture that shows the shape of a request in the API docs.
EXAMPLE_IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAAAAADhZOFXAAAAEElEQVR42mNg+I8GGcgSAQB8BB/h+harkQAAAABJRU5ErkJggg=="
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


class RequestImage(bytes):
    """The bytes of one image file that remember the request they came with and their descriptors.

    The adaptive batcher concatenates the images of many requests into one list; the request id on
    each lets the batch log every prediction under its own request.
    """

    # bytes subclasses cannot have __slots__; a default keeps pickling (bytes' __getnewargs__) working.
    def __new__(cls, data: bytes, request_id: str = "", descriptors: dict[str, float] | None = None) -> "RequestImage":
        instance = super().__new__(cls, data)
        instance.request_id = request_id
        instance.descriptors = descriptors
        return instance


def request_model(config: "ServingConfig") -> type[BaseModel]:
    """The ``{"images": [...]}`` request model with ``config``'s limits and clear messages."""
    max_items = config.max_items
    # The model's own reads are bounded by decode.default_limits (sides included): a request image
    # must be within them too, or it would fail inside a batch it shares with other requests.
    bounds = default_limits()
    limits = dataclasses.replace(bounds, max_bytes=min(config.max_image_bytes, bounds.max_bytes),
                                 max_pixels=min(config.max_image_pixels, bounds.max_pixels))
    # Base64 is 4 characters per 3 bytes, padded: longer text is over the byte limit for sure.
    max_chars = 4 * -(-limits.max_bytes // 3)

    def check_count(items: Any) -> Any:
        # Before the items: 10,000 images are refused without decoding one of them.
        if isinstance(items, list):
            if not items:
                raise ValueError("images is empty; send at least one image")
            if len(items) > max_items:
                raise ValueError(f"images holds {len(items)} items; at most {max_items} per request")
        return items

    def check_image(text: str) -> RequestImage:
        # BentoML's IO descriptor rebuilds the item type with this validator twice
        # (``ensure_io_descriptor``, bentoml 1.4): the second call gets the image the first made.
        if isinstance(text, RequestImage):
            return text
        return _checked_image(text, limits, max_chars)

    def stamp(images: list[RequestImage]) -> list[RequestImage]:
        # One id for the whole request, set once every item passed (the items are ours, made above).
        request_id = REQUEST_ID.get() or uuid.uuid4().hex
        for image in images:
            image.request_id = request_id
        return images

    class ClassifyRequest(BaseModel):
        """Images to classify, at most ``max_items``, each a base64 image file within the limits."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"images": [EXAMPLE_IMAGE]}})

        inputs: Annotated[
            list[Annotated[str, AfterValidator(check_image)]], BeforeValidator(check_count), AfterValidator(stamp)
        ] = Field(
            alias="images",
            description=(f"1 to {max_items} base64-encoded image files (PNG, JPEG, ...), each at most "
                         f"{limits.max_bytes:,} bytes and {limits.max_pixels:,} pixels"),
            examples=[[EXAMPLE_IMAGE]],
        )

    return ClassifyRequest


def _checked_image(text: str, limits: ImageLimits, max_chars: int) -> RequestImage:
    """The decoded, fully checked image of one base64 item; ValueError with the reason."""
    encoded = _DATA_URL.sub("", text, count=1)
    if not encoded:
        raise ValueError("empty; send a base64-encoded image file")
    if len(encoded) > max_chars:
        raise ValueError(f"{len(encoded):,} base64 characters is over the limit of {limits.max_bytes:,} bytes "
                         f"({max_chars:,} characters)")
    try:
        # validate=True: only the base64 alphabet and correct padding; whitespace or junk is refused
        # rather than skipped, so what is classified is exactly what was sent.
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not valid base64 ({error})") from None
    if len(data) > limits.max_bytes:
        raise ValueError(f"image of {len(data):,} bytes is over the limit of {limits.max_bytes:,}")
    try:
        image = decode_bytes(data, limits)
    except ImageProblem as problem:
        raise ValueError(str(problem)) from None
    return RequestImage(data, descriptors=describe_image(image, len(data)))
