"""A one-file OCI image archive, for the node's sandbox (pause) image: a static binary needs no base image,
and writing the archive directly keeps `dev-cluster up` free of any image builder."""

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _blob(archive: tarfile.TarFile, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _file(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def single_binary_image(binary: Path, entrypoint: str, ref: str, destination: Path) -> None:
    """Write an OCI archive holding one image: `binary` at `entrypoint`, run as nobody (65535), named `ref`
    (the annotation containerd's `ctr images import` names the image by)."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w") as layer:
        info = layer.gettarinfo(str(binary), arcname=entrypoint.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755
        with binary.open("rb") as content:
            layer.addfile(info, content)
    layer_bytes = layer_buffer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": [entrypoint], "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }, sort_keys=True).encode()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_suffix(".partial")
    with tarfile.open(partial, mode="w") as archive:
        config_descriptor = _blob(archive, config)
        layer_descriptor = _blob(archive, layer_bytes)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_descriptor},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_descriptor}],
        }, sort_keys=True).encode()
        manifest_descriptor = _blob(archive, manifest)
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_descriptor,
            "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
        }]}
        _file(archive, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _file(archive, "index.json", json.dumps(index, sort_keys=True).encode())
    partial.rename(destination)
