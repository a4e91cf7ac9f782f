"""kanshi — monitoring and alerting agent."""

__version__ = "0.1.0"
