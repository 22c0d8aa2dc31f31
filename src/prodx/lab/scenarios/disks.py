"""Disks that fail a server: a database's own disk filling up.

``db-disk-full``: all real. A private PostgreSQL (prodx.lab.services) keeps its data directory
on a small loop-mounted ext4 of its own, as a dedicated database volume; its socket and log
stay in the sandbox, as /var/log/postgresql does on Debian. The app's event table grows until
the volume is full: PostgreSQL answers the insert with "could not extend file ... No space
left on device" and logs it.
"""

from __future__ import annotations

import json
import os
import signal

from prodx.lab.framework import LOOP_COMMANDS, Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox
from prodx.lab.scenarios.common import mib
from prodx.lab.services import PostgresInstance, _run_as, find_postgres_bindir, free_port, postgres_unmet

#: One batch of the app's events: ~20 MiB of rows of ~1 KiB that do not compress.
_EVENTS_SQL = ("INSERT INTO events (kind, payload) SELECT 'checkout', repeat(md5(random()::text), 32) "
               "FROM generate_series(1, 20000)")


class DbDiskFull(Scenario):
    name = "db-disk-full"
    condition = "db-disk-full"
    description = ("a private PostgreSQL keeps its data directory on its own 128 MiB loop-mounted ext4; the app's "
                   "event table grows until the volume is full and PostgreSQL refuses the writes with 'could not "
                   "extend file ... No space left on device'")
    symptoms = (
        "checkout fails with a database error; reads still work",
        "the PostgreSQL log says 'could not extend file' ... 'No space left on device'",
    )
    needs = Needs(commands=(*LOOP_COMMANDS, ("psql", "postgresql")), check=postgres_unmet)
    visible_without_profile = True

    def setup(self, sb: Sandbox) -> None:
        bindir = find_postgres_bindir()
        account = _run_as("postgres")
        if bindir is None:
            raise LabError("needs Debian package postgresql")
        image = sb.make_ext4("pgdata.img", 128)
        _dev, self.volume = sb.mount_image(image, "pgdata")
        data = sb.mkdirs(self.volume / "15-main", mode=0o700)
        if account is not None:
            os.chown(data, account.pw_uid, account.pw_gid)
        self.pg = PostgresInstance(sb.mkdirs("postgres"), free_port(), sandbox=sb, bindir=bindir, account=account,
                                   data_path=data)
        self.pg.start()
        self.pg.psql("CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), kind text, "
                     "payload text)")
        self.pg.psql(_EVENTS_SQL.replace("20000", "2000"))
        st = os.statvfs(self.volume)
        self.injected.append(f"PostgreSQL on 127.0.0.1:{self.pg.port}, data in {data} on its own ext4 "
                             f"({mib(st.f_bavail * st.f_frsize)} free); the events table takes inserts")

    def inject(self, sb: Sandbox) -> None:
        refused = ""
        for _ in range(40):
            proc = self.pg.psql_result(_EVENTS_SQL, timeout_s=120)
            if proc.returncode != 0:
                refused = proc.stderr.strip()
                break
        if "No space left on device" not in refused:
            raise LabError(f"PostgreSQL did not run out of space: {refused or 'every insert succeeded'}")
        st = os.statvfs(self.volume)
        rows = self.pg.psql("SELECT count(*) FROM events") if self.pg.running else "?"
        self.injected.append(f"the events table grew to {rows} rows; {self.volume} has {mib(st.f_bavail * st.f_frsize)} "
                             f"free; the next insert got: {refused.splitlines()[0]}")

    def teardown(self, sb: Sandbox) -> None:
        if getattr(self, "pg", None) is not None:
            self.pg.stop(signal.SIGINT)

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(self.pg.log)], services=["postgres"]) + (
            f"\n[[dependency]]\nname = \"database\"\nurl = {json.dumps(self.pg.url)}\n")
