"""Mailchimp destination: RFM properties as merge fields on audience members, a tag per group (``destination``)."""

from .destination import MailchimpDestination

__all__ = ["MailchimpDestination"]
