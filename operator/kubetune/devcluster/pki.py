"""Certificates signed by the local cluster's CA (kwokctl's), with openssl: the real node's kubelet
authenticates as system:node:<name> in system:nodes, as the Node authorizer expects, and CoreDNS as a user
of its own with a ClusterRole of its own; Kueue's webhooks serve on loopback with a certificate the apiserver
trusts."""

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 365


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def sign_client(ca: KeyPair, folder: Path, name: str, common_name: str, organization: str | None = None) -> KeyPair:
    """A new key and a client certificate for `common_name` (and group `organization`), signed by `ca`."""
    subject = f"/CN={common_name}" + (f"/O={organization}" if organization else "")
    return _sign(ca, folder, name, subject, "extendedKeyUsage=clientAuth\n")


def sign_server(ca: KeyPair, folder: Path, name: str, ip: str) -> KeyPair:
    """A new key and a serving certificate for `ip`, signed by `ca`."""
    return _sign(ca, folder, name, f"/CN={ip}", f"extendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip}\n")


def _sign(ca: KeyPair, folder: Path, name: str, subject: str, usage: str) -> KeyPair:
    folder.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    request = folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    extensions.write_text("keyUsage=critical,digitalSignature,keyEncipherment\n" + usage)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pair.key), "-subj", subject,
             "-out", str(request))
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
             "-CAserial", str(folder / "ca.srl"), "-days", str(DAYS), "-extfile", str(extensions),
             "-out", str(pair.cert))
    request.unlink()
    extensions.unlink()
    pair.key.chmod(0o600)
    return pair


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")
