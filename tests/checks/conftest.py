"""Fixtures for the check tests."""

from tests.checks.icmp_netns import netns

__all__ = ["netns"]
