"""The operator's and the plugin's apiserver client: a proxy named in the environment is used (read once, when
the client is made), and hosts that NO_PROXY names are reached directly."""

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from kubetune.controller.kube import Kube


async def _server(via: str) -> tuple[web.AppRunner, int]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"via": via}})

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def _kubeconfig(tmp_path: Path, port: int) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: secret}}}}]
contexts: [{{name: ctx, context: {{cluster: c, user: u}}}}]
current-context: ctx
""")
    return str(path)


@pytest.mark.parametrize(("no_proxy", "expected"), [("", "proxy"), ("127.0.0.1", "direct")])
def test_a_proxy_in_the_environment_is_used_unless_no_proxy_names_the_apiserver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_proxy: str, expected: str) -> None:
    async def run() -> str:
        apiserver, api_port = await _server("direct")
        proxy, proxy_port = await _server("proxy")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("NO_PROXY", no_proxy)
        kube = await Kube.from_kubeconfig(_kubeconfig(tmp_path, api_port), "ctx")
        try:
            found = await kube.read("ns", "ConfigMap", "x")
        finally:
            await kube.close()
            await apiserver.cleanup()
            await proxy.cleanup()
        assert found is not None
        return found["data"]["via"]

    assert asyncio.run(run()) == expected
