"""Klaviyo destination: RFM properties on profiles, group-change events, segments.

``destination`` (the connector: rate limits, push), ``bodies`` (JSON:API request bodies, pure),
``jobs`` (bulk import jobs), ``segments`` (one segment per RFM group, for ``rfm-sync klaviyo bootstrap``),
``flows`` and ``flow_config`` (the draft flows of ``bootstrap --flows``), ``listing`` (found by name, made once).
"""

from .destination import KlaviyoDestination

__all__ = ["KlaviyoDestination"]
