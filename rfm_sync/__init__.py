"""rfm-sync: local RFM scoring of shop orders, synced to email platforms and ad audiences."""

__version__ = "0.1.0"
