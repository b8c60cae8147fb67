"""The response of ``POST /classify``: one prediction per input, the same for every classification
task. The request body is the task's (``Task.request_model``), since what an input is differs.
And what ``GET /readyz`` reports, ``Readiness``."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field


class ClassPrediction(BaseModel):
    """The prediction for one input."""

    label: str = Field(description="the most probable class")
    score: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="every class with its probability")
    model_tag: str = Field(description="the model that made this prediction")
    request_id: str = Field(description="the request's id (also in the X-Request-ID header)")


@dataclass(frozen=True)
class Readiness:
    """Whether the service process serves a model: ``/readyz`` answers it, and ``/classify`` is
    refused with its reason while it does not."""

    ready: bool
    model_tag: str | None  # the model being served, None when none is
    # Not ready: why. Ready: why a model other than the champion is served ("" when it is not).
    reason: str = ""
