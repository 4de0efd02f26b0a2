"""The shell commands of docs/analytics.md's reader-role section run verbatim in bash against a
real database: the owner sets the reader's password, the reader queries a view with psql."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.integration.analytics_seed import seed

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
SECTION = "## The read-only role `logowatch_reader`"


def section_commands() -> list[str]:
    body = DOC.read_text(encoding="utf-8").split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", body, flags=re.S)


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs the psql client")
def test_the_reader_role_commands_run_verbatim(migrated_db: str) -> None:
    seed(migrated_db)
    url = make_url(migrated_db)
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DATABASE_URL": migrated_db, "LOGOWATCH_READER_PASSWORD": "p@ss/w:rd#%",
           "PGHOST": str(url.host), "PGPORT": str(url.port), "PGDATABASE": str(url.database)}
    commands = section_commands()
    assert len(commands) == 2 and "psql" in commands[1]
    outputs = []
    for command in commands:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=env,
                              capture_output=True, text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "logowatch_reader password set" in outputs[0]
    assert "p@ss" not in "".join(outputs)
    assert re.search(r"2026-03-0[12] \|", outputs[1]), outputs[1]
    engine = create_engine(migrated_db)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT rolpassword IS NOT NULL FROM pg_authid "
                                     "WHERE rolname = 'logowatch_reader'")).scalar_one()
    finally:
        engine.dispose()
