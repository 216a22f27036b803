"""``python -m rfm_sync.cli``: the ``rfm-sync`` command without its console script."""

from . import main

main()
