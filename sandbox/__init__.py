"""Platform sandbox: a real HTTP server that stands in for Bentley iTwin and Autodesk APS offline."""

from sandbox.server import Sandbox

__all__ = ["Sandbox"]
