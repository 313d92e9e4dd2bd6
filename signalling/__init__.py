"""HTTP signalling for callbot: the embedding surface.

    from signalling import CallbotConfig, create_app, mount
"""

from .app import create_app, mount
from .config import CallbotConfig

__all__ = ["CallbotConfig", "create_app", "mount"]
