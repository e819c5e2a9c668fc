"""Vendor clients, each owning its URLs, over the shared requestor."""
