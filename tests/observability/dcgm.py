"""A stand-in for DCGM exporter on a GPU node, since the test machines have no GPU: it serves what dcgm-exporter
serves for a node whose GPUs 0 and 1 train one pod and whose GPU 2 is idle, in its own metric names, help
texts and labels (internal/pkg/rendermetrics/render_metrics.go: gpu, UUID, pci_bus_id, device, modelName,
hostname, then the pod mapping's container, namespace and pod, sorted; an idle GPU has no pod mapping)."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UTILIZATION = {"0": 87, "1": 88, "2": 0}  # percent
FB_USED_MIB = {"0": 20_000, "1": 20_001, "2": 0}
_FIELDS = (("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", UTILIZATION),
           ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", FB_USED_MIB))


def page(namespace: str, pod: str) -> bytes:
    lines = []
    for name, help_text, values in _FIELDS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for gpu, value in values.items():
            mapped = f',container="trainer",namespace="{namespace}",pod="{pod}"' if gpu != "2" else ""
            lines.append(f'{name}{{gpu="{gpu}",UUID="GPU-5d1c6b1e-0000-4000-8000-00000000000{gpu}",'
                         f'pci_bus_id="00000000:0{gpu}:00.0",device="nvidia{gpu}",modelName="NVIDIA L4",'
                         f'hostname="gpu-node-1"{mapped}}} {value}')
    return ("\n".join(lines) + "\n").encode()


class _Handler(BaseHTTPRequestHandler):
    served = b""

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.served)

    def log_message(self, *_: Any) -> None:
        pass


class Exporter:
    """Serves an empty page until `serve` is given the training pod."""

    def __init__(self, server: ThreadingHTTPServer, handler: type[_Handler]) -> None:
        self._server, self._handler = server, handler

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def serve(self, namespace: str, pod: str) -> None:
        self._handler.served = page(namespace, pod)


@contextmanager
def exporter() -> Iterator[Exporter]:
    handler = type("Handler", (_Handler,), {"served": b""})  # a page of its own per exporter
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Exporter(server, handler)
    finally:
        server.shutdown()
        server.server_close()
