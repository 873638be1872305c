"""Client certificates signed by the local cluster's CA (kwokctl's), with openssl: the real node's kubelet
authenticates as system:node:<name> in system:nodes, as the Node authorizer expects, and CoreDNS as a user
of its own with a ClusterRole of its own."""

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
    folder.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    subject = f"/CN={common_name}" + (f"/O={organization}" if organization else "")
    request = folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    extensions.write_text("keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n")
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
