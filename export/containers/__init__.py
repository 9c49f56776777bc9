"""Result containers (Medusa's ``medusa.containers``): :class:`BatchResults`."""

from facecrop.containers.results import BatchResults

__all__ = ["BatchResults"]
