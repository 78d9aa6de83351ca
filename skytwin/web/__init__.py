"""SkyTwin's HTTP surface: the Quart-Trio app and how it is served."""

from .app import create_app
from .serve import serve_web
from .state import CheckResult, WebState

__all__ = ["CheckResult", "WebState", "create_app", "serve_web"]
