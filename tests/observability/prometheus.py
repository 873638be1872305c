"""A real Prometheus server (Debian's package) on loopback, and the HTTP API calls the tests make of it."""

import json
import random
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_consecutive_ports(count: int) -> int:
    """The first of `count` free ports in a row, for servers that bind port + local rank. Taken below the
    kernel's ephemeral range, where free_port() and every client's socket draw, so none of them lands on
    port + 1 between this check and the servers' binds (a CI run's rank 1 lost its port that way)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for base in random.sample(range(max(1024, low - 12000), low - count), 200):
        sockets = [socket.socket() for _ in range(count)]
        try:
            for number, s in enumerate(sockets):
                s.bind(("127.0.0.1", base + number))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} free ports in a row below {low}")


class Prometheus:
    """`scrape_configs` as Prometheus Operator would write them for the monitors (tests/observability/
    scrape_configs.py), every second."""

    def __init__(self, root: Path, scrape_configs: list[dict[str, Any]], rules: Path | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.rules = rules
        self.process: subprocess.Popen | None = None
        self._write(scrape_configs)

    def _write(self, scrape_configs: list[dict[str, Any]]) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(self.rules)] if self.rules else [],
            "scrape_configs": scrape_configs,
        }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))

    def reconfigure(self, scrape_configs: list[dict[str, Any]]) -> None:
        """New scrape jobs, as Prometheus Operator reloads Prometheus when a monitor's targets change."""
        self._write(scrape_configs)
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)
        wanted = {job["job_name"] for job in scrape_configs}
        deadline = time.monotonic() + 30
        while wanted != {job["job_name"] for job in yaml.safe_load(self.api("status/config")["yaml"])["scrape_configs"]}:
            assert time.monotonic() < deadline, (self.root / "prometheus.log").read_text()[-3000:]
            time.sleep(0.25)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={self.root / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=(self.root / "prometheus.log").open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200:
                    return
            except OSError:
                pass
            assert self.process.poll() is None, (self.root / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus did not get ready"
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]
