"""The request body of ``POST /classify`` for text classification: ``{"texts": [...]}``.

The request is checked before it reaches the batcher, so one bad request is a 400 for that
request only and never fails a batch it would have shared with others. The limits come from the
``serving`` config, hence a factory rather than a fixed class.

The service reads every task's request the same way: one field named ``inputs`` (here published
as ``texts``, its JSON name), whose items carry the id of the request they came with.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tuneops.components.request_context import REQUEST_ID
from tuneops.components.tasks.text.blank import is_blank

if TYPE_CHECKING:
    from tuneops.components.config import ServingConfig

EXAMPLE_TEXTS = ["Great battery life, works as described.", "Stopped working after two days."]


class RequestText(str):
    """A text that remembers which request it came in with.

    The adaptive batcher concatenates the texts of many requests into one list; carrying the
    request id on each text lets the batch log every prediction under its own request.
    """

    __slots__ = ("request_id",)

    def __new__(cls, text: str, request_id: str) -> "RequestText":
        instance = super().__new__(cls, text)
        instance.request_id = request_id
        return instance


def request_model(config: "ServingConfig") -> type[BaseModel]:
    """The ``{"texts": [...]}`` request model with ``config``'s limits and clear messages."""
    max_items, max_chars = config.max_items, config.max_text_chars

    def check_texts(texts: list[str]) -> list[RequestText]:
        if not texts:
            raise ValueError("texts is empty; send at least one text")
        if len(texts) > max_items:
            raise ValueError(f"texts holds {len(texts)} items; at most {max_items} per request")
        for index, text in enumerate(texts):
            if is_blank(text):  # zero-width characters alone count as empty, as in validation
                raise ValueError(f"texts[{index}] is empty")
            if len(text) > max_chars:
                raise ValueError(f"texts[{index}] has {len(text)} characters; at most {max_chars}")
        request_id = REQUEST_ID.get() or uuid.uuid4().hex
        return [RequestText(text, request_id) for text in texts]

    class ClassifyRequest(BaseModel):
        """Texts to classify, at most ``max_items``, each 1..``max_text_chars`` characters."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"texts": EXAMPLE_TEXTS}})

        inputs: Annotated[list[str], AfterValidator(check_texts)] = Field(
            alias="texts",
            description=f"1 to {max_items} texts of 1 to {max_chars} characters",
            examples=[EXAMPLE_TEXTS],
        )

    return ClassifyRequest
