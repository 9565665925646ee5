# The people's client commands: `tessera image upload|download|list`. Parses nothing from
# the environment itself: cli.py (the composition root) passes the defaults it read.
# Invariants: progress goes to stderr (only on a terminal unless --progress), results to
# stdout; exit 0 on success, 1 on a reported failure (ClientError), 2 on bad usage.
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tessera.client.api import Client, ClientError, Endpoint
from tessera.client.download import download
from tessera.client.progress import Progress, human_bytes

DEFAULT_URL = "http://127.0.0.1:9292"


def add_endpoint_args(p: argparse.ArgumentParser, defaults: dict[str, str | None]) -> None:
    p.add_argument("--url", default=defaults.get("url") or DEFAULT_URL,
                   help="Images API endpoint (default $TESSERA_URL, $OS_IMAGE_URL or "
                        f"{DEFAULT_URL})")
    p.add_argument("--token", default=defaults.get("token"),
                   help="X-Auth-Token (default $OS_AUTH_TOKEN)")


def add_image_parser(sub, defaults: dict[str, str | None]) -> None:
    image = sub.add_parser("image", help="upload, download and list images (any Glance)")
    isub = image.add_subparsers(dest="image_command", required=True)

    up = isub.add_parser("upload", help="create an image and upload FILE as its data")
    up.add_argument("file", type=Path)
    up.add_argument("--name", help="image name (default: the file name)")
    up.add_argument("--disk-format", default="raw")
    up.add_argument("--container-format", default="bare")
    up.add_argument("--visibility", choices=("public", "private", "shared", "community"))
    up.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")

    down = isub.add_parser("download", help="download an image's data (resumable)")
    down.add_argument("image_id")
    down.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    down.add_argument("--parallel", type=int, default=1, metavar="N",
                      help="N ranged requests at once (default 1)")
    down.add_argument("--no-resume", action="store_true",
                      help="start over even if a partial download exists")

    ls = isub.add_parser("list", help="list the images you can see")
    ls.add_argument("--json", action="store_true", help="one JSON array")

    for p in (up, down, ls):
        add_endpoint_args(p, defaults)
        p.add_argument("--progress", action="store_true",
                       help="draw progress bars even when stderr is not a terminal")
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _progress_stream(args: argparse.Namespace):
    if args.quiet:
        return None
    return sys.stderr if args.progress or sys.stderr.isatty() else None


def run_image(args: argparse.Namespace) -> int:
    client = Client(Endpoint(args.url, args.token))
    try:
        if args.image_command == "upload":
            return _upload(client, args)
        if args.image_command == "download":
            if args.parallel < 1:
                print("tessera: --parallel must be at least 1", file=sys.stderr)
                return 2
            image = download(client, args.image_id, args.output, parallel=args.parallel,
                             progress_stream=_progress_stream(args),
                             resume=not args.no_resume)
            print(f"{args.output}: {image['size']} bytes, {image.get('os_hash_algo') or 'md5'}"
                  f" verified")
            return 0
        return _list(client, args)
    except ClientError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 1


def _upload(client: Client, args: argparse.Namespace) -> int:
    try:
        size = os.stat(args.file).st_size
        source = open(args.file, "rb")
    except OSError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 1
    fields = {"name": args.name or args.file.name, "disk_format": args.disk_format,
              "container_format": args.container_format}
    if args.visibility:
        fields["visibility"] = args.visibility
    for item in args.property:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"tessera: --property needs KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        fields[key] = value
    with source:
        image = client.create_image(fields)
        progress = Progress(f"{image['id'][:8]} upload", size, _progress_stream(args))
        try:
            client.upload(image["id"], source, size, progress.add)
        except ClientError as exc:
            raise ClientError(f"{exc} (image {image['id']} was created and has no data: "
                              "upload again to it, or delete it)", exc.status) from exc
        progress.finish()
    image = client.get_image(image["id"])
    print(f"{image['id']}  {image.get('status')}  {image.get('size')} bytes  "
          f"{image.get('os_hash_algo') or ''} {image.get('os_hash_value') or ''}".rstrip())
    return 0


def _list(client: Client, args: argparse.Namespace) -> int:
    images = list(client.list_images())
    if args.json:
        print(json.dumps(images, sort_keys=True))
        return 0
    rows = [("ID", "NAME", "STATUS", "SIZE", "DISK", "VISIBILITY")]
    for im in images:
        size = im.get("size")
        rows.append((im["id"], im.get("name") or "", im.get("status") or "",
                     "-" if size is None else human_bytes(size), im.get("disk_format") or "-",
                     im.get("visibility") or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
