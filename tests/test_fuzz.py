"""Fuzzing gate: every operation of the OpenAPI schema, with generated (valid and invalid) path,
query, header and body values, as an admin, a researcher and a labeler, against the real app
served by uvicorn (its PostgreSQL hot path included) on a fresh database. No answer may be a 5xx.

Bounded for CI: ``FUZZ_EXAMPLES`` examples per operation and role (default 12; set RLHF_FUZZ_EXAMPLES
for a longer run), no deadline, no example database. The number of requests made is printed
(recorded in SECURITY.md).
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
import requests
import schemathesis
from sqlalchemy import select
from hypothesis import HealthCheck, Phase, given, settings as hsettings

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.migrate import upgrade
from app.users import service as users
from app.users.models import Role, User
from tests.conftest import TEST_SECRET
from tests.db_setup import fresh_database
from tests.factories import make_demonstration_batch, make_prompts, make_ranking_batch, make_user
from tests.live_server import serving

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow]

FUZZ_EXAMPLES = int(os.environ.get("RLHF_FUZZ_EXAMPLES", "12"))
ROLES = ("labeler", "researcher", "admin")  # the admin last: it may deactivate users or revoke tokens
# Operations that end the credentials the run itself uses; their inputs are checked elsewhere.
SKIP = {("POST", "/logout")}


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    with fresh_database(tmp, "fuzz") as url:
        upgrade(url)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        with factory() as db:
            for role in ROLES:
                make_user(db, role, username=f"fuzz-{role}")
            make_prompts(db, [f"Seed prompt number {i} for the fuzzer." for i in range(6)])
            make_ranking_batch(db)
            make_demonstration_batch(db)
            db.commit()
        app_settings = Settings(mode="test", database_url=url, secret_key=TEST_SECRET, artifact_dir=tmp / "artifacts")
        app = create_app(app_settings, engine=engine)


        def credentials(role: str) -> dict[str, str]:
            """A fresh token of the role's user, active again: an earlier generated request may have
            revoked its token, deactivated it or changed its role (all valid operations)."""
            with factory() as db:
                user = db.scalar(select(User).where(User.username == f"fuzz-{role}"))
                user.active, user.role = True, Role(role)
                token = users.create_token(db, user, "fuzz")[1]
                db.commit()
            return {"Authorization": f"Bearer {token}"}

        with serving(app) as base:
            yield base, credentials
        engine.dispose()


def test_no_operation_answers_5xx_to_any_role(fuzz_server):
    base, credentials = fuzz_server
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    session = requests.Session()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for role in ROLES:
        for operation in operations:
            if (operation.method.upper(), operation.path) in SKIP:
                continue
            headers = credentials(role)

            @hsettings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                       phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def run(case):
                response = case.call(base_url=base, session=session, headers=headers, timeout=60,
                                     allow_redirects=False)
                statuses[response.status_code] += 1
                if response.status_code >= 500 and len(failures) < 50:
                    failures.append(f"{role}: {case.method} {case.formatted_path} -> {response.status_code}\n"
                                    f"  {case.as_curl_command()}\n  {response.text[:300]}")

            run()
    elapsed = time.monotonic() - started
    total = sum(statuses.values())
    print(f"\nfuzz: {total} requests over {len(operations)} operations x {len(ROLES)} roles in {elapsed:.0f} s; "
          f"statuses {dict(sorted(statuses.items()))}")
    assert total >= len(operations) * len(ROLES), "the fuzzer made fewer requests than operations"
    assert not failures, "5xx answers:\n" + "\n".join(failures)
