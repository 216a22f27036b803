"""Several processes opening (and so migrating) the same new store at once all succeed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from rfm_sync.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # concurrency: processes migrating one new store at once

OPEN = "import sys; from rfm_sync.store import Store; Store.open(sys.argv[1]).close()"


def test_concurrent_first_opens_all_succeed(tmp_path, store_url, request):
    for attempt in range(3):
        if store_url.startswith("sqlite:///"):
            url = f"sqlite:///{tmp_path / f'store-{attempt}.sqlite'}"
        else:  # a fresh database each attempt
            server = request.getfixturevalue("pg_server")
            name = server.create_database()
            request.addfinalizer(lambda name=name, server=server: server.drop_database(name))
            url = server.url(name)
        procs = [
            subprocess.Popen([sys.executable, "-c", OPEN, url], cwd=REPO, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)
        store = Store.open(url)
        with store.engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        store.close()
        assert len(versions) == 1


def test_head_revision_is_alembics_head():
    """Store.open skips Alembic for a store at HEAD_REVISION: it must be the newest revision."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from rfm_sync.store import HEAD_REVISION, MIGRATIONS

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]


def test_a_store_of_another_revision_still_goes_through_alembic(tmp_path):
    import sqlalchemy as sa

    from rfm_sync.store import Store
    from rfm_sync.store.errors import StoreError

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    store = Store.open(url)
    assert store.at_head()
    with store.engine.begin() as conn:  # as a newer rfm-sync would leave it
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    store.close()
    with pytest.raises(StoreError):
        Store.open(url)
