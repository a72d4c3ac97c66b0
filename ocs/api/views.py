"""Shared view builders, and the JSON answer of the hot routes."""

from __future__ import annotations

from fastapi.responses import Response
from pydantic import BaseModel

from ocs.api.models import Bucket
from ocs.balance.models import BucketState


def bucket_views(buckets: list[BucketState]) -> list[Bucket]:
    return [Bucket(**b.as_dict()) for b in buckets]


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as JSON, serialised once by pydantic-core. A route that returns the model
    itself has FastAPI validate it again against its ``response_model`` and encode it in
    Python; the route keeps ``response_model`` for its OpenAPI schema."""
    return Response(model.model_dump_json(), status_code, media_type="application/json")
