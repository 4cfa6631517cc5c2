"""streamproxy: a recording relay for OpenAI-compatible streaming APIs."""

__version__ = "0.1.0"
