"""SkyTwin: the always-on core of a personal agent for Gmail and Google Calendar."""

__version__ = "0.1.0"
