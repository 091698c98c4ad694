"""Shared test setup: no network, fewer threads, and a few cheap shared models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub access fails at once instead of hanging
os.environ.setdefault("NO_COLOR", "1")
