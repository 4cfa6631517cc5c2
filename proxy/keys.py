"""Typed application keys: how handlers reach the object graph that ``create_app`` builds."""

from __future__ import annotations

from aiohttp import web

from proxy.lazy_store import LazyStore
from proxy.metrics import Metrics
from proxy.recorder import Recorder
from proxy.relay import Relay, RuntimeState
from proxy.replay import Replayer
from proxy.settings import Settings

__all__ = ["METRICS", "RECORDER", "RELAY", "REPLAYER", "SETTINGS", "STATE", "STORE"]

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", LazyStore)
RECORDER = web.AppKey("recorder", Recorder)
METRICS = web.AppKey("metrics", Metrics)
STATE = web.AppKey("state", RuntimeState)
RELAY = web.AppKey("relay", Relay)
REPLAYER = web.AppKey("replayer", Replayer)
