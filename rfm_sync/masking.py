"""Email addresses masked in text: ``jane.doe@example.com`` → ``j***@example.com``.

One pattern for every place a customer's address could leak: the daemon's log lines and fields
(:mod:`rfm_sync.daemon.logs`), the terminal tables and the HTML report (:mod:`rfm_sync.insight`,
:mod:`rfm_sync.report_html`).
"""

from __future__ import annotations

import re

# an address: the first character of its local part (an apostrophe is allowed there: o'neil@...) and
# its domain are kept; every message, log field, table and report page masks with it
EMAIL = re.compile(r"([A-Za-z0-9._%+'-])[A-Za-z0-9._%+'-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def mask(text: str) -> str:
    return EMAIL.sub(r"\1***@\2", text)
