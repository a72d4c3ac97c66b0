"""HTTP API for tenants: wallets, pools, subscriptions, catalogue, events, sessions."""

from __future__ import annotations

from ocs.api.asgi import ApiServer, create_app, serve_api, start_api
from ocs.api.cli import main_api, main_token_create

__all__ = ["ApiServer", "create_app", "main_api", "main_token_create", "serve_api", "start_api"]
