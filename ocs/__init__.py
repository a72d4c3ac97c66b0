"""ocs: an Online Charging System for IoT connectivity."""

__version__ = "0.1.0"
