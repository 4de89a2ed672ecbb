"""tunelab: from a team's own raw examples to a specialised model that is trained, proven
better than its base, served, and watched in production."""

__version__ = "0.1.0"
