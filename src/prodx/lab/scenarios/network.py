"""Network and dependency faults with real servers: a database that stopped, a port another
process took from nginx, a database out of connection slots.

Each runs its servers from the sandbox (PostgreSQL from prodx.lab.services, nginx with its
own config) on free ports of 127.0.0.1; no loop device or throwaway user is needed.
"""

from __future__ import annotations

import json
import signal

from prodx.lab.framework import Needs, Scenario, profile_toml
from prodx.lab.sandbox import LabError, Sandbox, wait_port
from prodx.lab.scenarios.common import child_python
from prodx.lab.services import PostgresInstance, _run_as, find_postgres_bindir, free_port, postgres_unmet
from prodx.lab.webstack import find_nginx

_PG_NEEDS = Needs(commands=(("psql", "postgresql"),), kernel=(), check=postgres_unmet)


def _dependency(name: str, url: str) -> str:
    return f"\n[[dependency]]\nname = {json.dumps(name)}\nurl = {json.dumps(url)}\n"


class _WithPostgres(Scenario):
    """An app that needs a private PostgreSQL in the sandbox."""

    settings: dict[str, object] = {}

    def setup(self, sb: Sandbox) -> None:
        bindir = find_postgres_bindir()
        if bindir is None:
            raise LabError("needs Debian package postgresql")
        self.pg = PostgresInstance(sb.mkdirs(sb.path("postgres")), free_port(), sandbox=sb, bindir=bindir,
                                   account=_run_as("postgres"), settings=dict(self.settings))
        self.pg.start()
        self.injected.append(f"PostgreSQL on 127.0.0.1:{self.pg.port} (data in {self.pg.data_dir}) answers "
                             f"{self.pg.psql('SELECT 1')!r} to SELECT 1")

    def teardown(self, sb: Sandbox) -> None:
        if getattr(self, "pg", None) is not None:
            self.pg.stop(signal.SIGINT)

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root") + _dependency("database", self.pg.url)


class DependencyDown(_WithPostgres):
    name = "dependency-down"
    condition = "dependency-down"
    description = "the app's PostgreSQL (a private instance in the sandbox) is stopped while the profile says the app needs it"
    symptoms = ("every page that reads the database returns 500", "the app log says SQLSTATE[HY000] [2002] Connection refused")
    needs = _PG_NEEDS

    def inject(self, sb: Sandbox) -> None:
        self.pg.stop(signal.SIGINT)
        self.injected.append(f"PostgreSQL stopped (fast shutdown); 127.0.0.1:{self.pg.port} now refuses connections")


class DbConnectionsExhausted(_WithPostgres):
    name = "db-connections-exhausted"
    condition = "db-connections-exhausted"
    description = ("a private PostgreSQL with max_connections = 5 (none reserved) whose five slots are all held "
                   "by idle client sessions, as leaked connections of app workers would")
    symptoms = ("pages fail with 'FATAL: sorry, too many clients already'", "restarting the app helps for a while")
    needs = _PG_NEEDS
    settings = {"max_connections": 5, "superuser_reserved_connections": 0}

    def inject(self, sb: Sandbox) -> None:
        self.pg.hold_connections(5)
        refused = self.pg.psql_result("SELECT 1")
        self.injected.append(f"5 idle sessions hold every slot; a new one gets: {refused.stderr.strip().splitlines()[-1]}")


_NGINX_CONF = """worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 16; }}
http {{
    access_log {root}/nginx-access.log;
    client_body_temp_path {root}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port};
        return 200 "shop is up\\n";
    }}
}}
"""
_SQUAT = ("import socket, sys, time\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
          "time.sleep(86400)\n")


class PortConflict(Scenario):
    name = "port-conflict"
    condition = "port-conflict"
    description = ("nginx (own config in the sandbox) is restarted while another process (a stray Python "
                   "server) has taken 127.0.0.1:PORT, the port its config listens on")
    symptoms = ("after a restart the site is down", "nginx will not start: bind() ... failed (98: Address already in use)")
    needs = Needs(commands=(("nginx", "nginx-light"),), kernel=())

    def setup(self, sb: Sandbox) -> None:
        self.nginx = find_nginx() or "nginx"
        self.port = free_port()
        sb.mkdirs(sb.path("nginx-tmp"))
        self.conf = sb.write_text("nginx.conf", _NGINX_CONF.format(root=sb.root, port=self.port))
        self.error_log = sb.write_text("nginx-error.log", "")
        self.argv = [self.nginx, "-p", f"{sb.root}/", "-c", str(self.conf), "-e", str(self.error_log)]
        sb.run([*self.argv, "-t", "-q"])
        self.proc = sb.spawn([*self.argv, "-g", "daemon off;"], log="nginx.out")
        wait_port(self.port, True)
        self.injected.append(f"nginx serves http://127.0.0.1:{self.port}/")

    def inject(self, sb: Sandbox) -> None:
        self.proc.send_signal(signal.SIGQUIT)  # graceful stop, as a restart does first
        self.proc.wait(timeout=15)
        wait_port(self.port, False)
        squatter = sb.spawn([child_python(), "-I", "-c", _SQUAT, str(self.port)], log="squatter.out")
        wait_port(self.port, True)
        start = sb.run([*self.argv, "-g", "daemon off;"], check=False, timeout_s=30)
        if start.returncode == 0:
            raise LabError("nginx started although its port is taken")
        self.injected.append(f"python3 (pid {squatter.pid}) holds 127.0.0.1:{self.port}; nginx's restart failed: "
                             f"{self.error_log.read_text().strip().splitlines()[-1]}")

    def profile(self, sb: Sandbox) -> str:
        return profile_toml(name=f"lab-{self.name}", user="root", logs=[str(self.error_log)], services=["nginx"])


