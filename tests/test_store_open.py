"""Several processes opening (and so migrating) the same new store at once all succeed."""
from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa

from rfm_sync.store import Store
from tests.conftest import REPO

OPEN = "import sys; from rfm_sync.store import Store; Store.open('sqlite:///' + sys.argv[1]).close()"


def test_concurrent_first_opens_all_succeed(tmp_path):
    for attempt in range(3):
        path = tmp_path / f"store-{attempt}.sqlite"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(path)], cwd=REPO, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)
        store = Store.open("sqlite:///" + str(path))
        with store.engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        store.close()
        assert len(versions) == 1
