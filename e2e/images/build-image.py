#!/usr/bin/env python3
"""Assembles a single-layer OCI image from files on this machine, without Docker, and writes
it as an OCI archive (the tar form of an OCI image layout) that `ctr images import` and
`skopeo copy oci-archive:` read. Output is reproducible: fixed timestamps and owners.

  build-image.py --name wharf.local/wharf:dev --out wharf.tar \
      --file target/wharf:/wharf:0755 --file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt \
      --symlink /wharf:/usr/bin/wharf --entrypoint '["/wharf"]' --user 65532:65532
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def add_parents(tar, path, seen):
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d and d not in seen:
            seen.add(d)
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)


def layer_tar(files, symlinks, dirs):
    raw = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d, mode in dirs:
            add_parents(tar, d + "/x", seen)
            if d.strip("/") not in seen:
                seen.add(d.strip("/"))
                info = tarfile.TarInfo(d.strip("/"))
                info.type = tarfile.DIRTYPE
                info.mode = mode
                tar.addfile(info)
        for src, dst, mode in files:
            add_parents(tar, dst, seen)
            with open(src, "rb") as f:
                data = f.read()
            info = tarfile.TarInfo(dst.strip("/"))
            info.size = len(data)
            info.mode = mode if mode is not None else (os.stat(src).st_mode & 0o777)
            tar.addfile(info, io.BytesIO(data))
        for target, dst in symlinks:
            add_parents(tar, dst, seen)
            info = tarfile.TarInfo(dst.strip("/"))
            info.type = tarfile.SYMTYPE
            info.linkname = target
            info.mode = 0o777
            tar.addfile(info)
    return raw.getvalue()


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"digest": f"sha256:{digest}", "size": len(data)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="full image reference, e.g. wharf.local/wharf:dev")
    p.add_argument("--out", required=True)
    p.add_argument("--file", action="append", default=[], help="SRC:DST[:OCTAL_MODE]")
    p.add_argument("--symlink", action="append", default=[], help="TARGET:DST")
    p.add_argument("--dir", action="append", default=[], help="DST[:OCTAL_MODE] (an empty directory)")
    p.add_argument("--entrypoint", default=None, help="JSON list")
    p.add_argument("--cmd", default=None, help="JSON list")
    p.add_argument("--user", default=None)
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default=None)
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    a = p.parse_args()

    files = []
    for spec in a.file:
        parts = spec.split(":")
        mode = int(parts[2], 8) if len(parts) > 2 else None
        files.append((parts[0], parts[1], mode))
    symlinks = [tuple(s.split(":", 1)) for s in a.symlink]
    dirs = []
    for spec in a.dir:
        parts = spec.split(":")
        dirs.append((parts[0], int(parts[1], 8) if len(parts) > 1 else 0o755))

    layer = layer_tar(files, symlinks, dirs)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
        g.write(layer)
    layer_gz = gz.getvalue()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {k: v for k, v in {
            "Entrypoint": json.loads(a.entrypoint) if a.entrypoint else None,
            "Cmd": json.loads(a.cmd) if a.cmd else None,
            "User": a.user,
            "Env": a.env or ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": a.workdir,
            "Labels": dict(l.split("=", 1) for l in a.label) or None,
        }.items() if v is not None},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "wharf e2e/images/build-image.py"}],
    }
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    tag = a.name.rsplit(":", 1)[1] if ":" in a.name.rsplit("/", 1)[-1] else "latest"

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        layout = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
        info = tarfile.TarInfo("oci-layout")
        info.size = len(layout)
        out.addfile(info, io.BytesIO(layout))
        config_desc = blob(out, config_bytes)
        layer_desc = blob(out, layer_gz)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_desc = blob(out, manifest_bytes)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": a.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }
        index_bytes = json.dumps(index, separators=(",", ":")).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(index_bytes)
        out.addfile(info, io.BytesIO(index_bytes))
    os.replace(tmp, a.out)
    print(f"{a.name} {manifest_desc['digest']} -> {a.out}")


if __name__ == "__main__":
    main()
