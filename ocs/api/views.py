"""Shared view builders."""

from __future__ import annotations

from ocs.api.models import Bucket
from ocs.balance.models import BucketState


def bucket_views(buckets: list[BucketState]) -> list[Bucket]:
    return [Bucket(**b.as_dict()) for b in buckets]
