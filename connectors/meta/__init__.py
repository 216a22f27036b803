"""Meta destination: Custom Audiences that follow the RFM groups (``destination``)."""

from .destination import MetaAudiencesDestination

__all__ = ["MetaAudiencesDestination"]
