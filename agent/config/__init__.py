"""Configuration: YAML with includes and ``${ENV}``, validated by pydantic models."""

from agent.config.loader import CheckSpec, Config, ConfigError, NotifierSpec, load_config

__all__ = ["CheckSpec", "Config", "ConfigError", "NotifierSpec", "load_config"]
