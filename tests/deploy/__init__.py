"""Deployment files (deploy/): rendered and checked with the real tools."""
