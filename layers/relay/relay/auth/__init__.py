"""Credentials: platform secrets from Secrets Manager, and the access tokens made from them."""
