# The composition root: parses the command line, builds the configuration once, wires the
# engine, the HTTP server and (later) replication together, and owns process concerns
# (signals, exit codes). Invariants: the only module that imports every layer; subcommands
# read top to bottom; exit status 0 means success, 1 a reported problem, 2 a usage error.
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tessera import config as config_mod


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--data-dir", help="data directory (default ./tessera-data)")


def build_parser(client_defaults: dict[str, str | None] | None = None
                 ) -> argparse.ArgumentParser:
    """`client_defaults`: url/token defaults of the client commands (read by `main`)."""
    client_defaults = client_defaults or {}
    parser = argparse.ArgumentParser(prog="tessera", description="tessera image service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node (public Images API v2)")
    _add_common(serve)
    serve.add_argument("--bind", help="HOST:PORT of the public API (default 127.0.0.1:9292)")
    serve.add_argument("--log-format", choices=("text", "json"),
                       help="log lines for people (text, default) or machines (json)")
    serve.add_argument("--workers", type=int, help="processes answering the public API "
                       "([api] workers; default 1)")

    config = sub.add_parser("config", help="work with configuration files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate FILE and print the effective "
                                                "configuration (unknown keys are errors)")
    check.add_argument("file", type=Path, help="TOML configuration file")

    status = sub.add_parser("status", help="one node at a glance (a running node's /metrics "
                                           "with --url, else the data directory)")
    _add_common(status)
    status.add_argument("--url", help="a running node, e.g. http://127.0.0.1:9292")
    status.add_argument("--token", help="X-Auth-Token for /metrics behind auth")
    status.add_argument("--json", action="store_true", help="one JSON object")

    from tessera.client.commands import add_image_parser

    add_image_parser(sub, client_defaults)

    cluster = sub.add_parser("cluster", help="cluster administration")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    keygen = cluster_sub.add_parser("keygen", help="write a new cluster key (shared secret "
                                                   "for [cluster] key_file)")
    keygen.add_argument("file", nargs="?", type=Path, help="key file (default: stdout)")

    stats = sub.add_parser("stats", help="print storage statistics")
    _add_common(stats)
    stats.add_argument("--json", action="store_true", help="one JSON object")

    fsck = sub.add_parser("fsck", help="check the index against segments and rehash chunks")
    _add_common(fsck)
    fsck.add_argument("--repair", action="store_true", help="fix what can be fixed")
    fsck.add_argument("--json", action="store_true", help="print the report as JSON")

    metadefs = sub.add_parser("metadefs", help="load or export metadata definition namespaces")
    md_sub = metadefs.add_subparsers(dest="metadefs_command", required=True)
    md_load = md_sub.add_parser("load", help="load namespace files (DIR/*.json, Glance's "
                                             "format); without DIR, tessera's starter set")
    _add_common(md_load)
    md_load.add_argument("dir", nargs="?", type=Path, help="directory of namespace files")
    md_export = md_sub.add_parser("export", help="write every namespace to DIR/*.json")
    _add_common(md_export)
    md_export.add_argument("dir", type=Path, help="directory to write the files to")

    # one round of a periodic process on a data directory (engine/processes.py); for a
    # stopped node: a running node runs the same rounds itself (and the cache ones behind
    # POST /v2/cache/prune|clean)
    cache = sub.add_parser("cache", help="image cache maintenance: prune (LRU under the "
                                         "budget) or clean (stalled and invalid entries)")
    cache.add_argument("cache_command", choices=("prune", "clean", "prefetch"))
    _add_common(cache)
    scrub = sub.add_parser("scrub", help="delete pending_delete images past scrub_time "
                                         "(delayed delete), or --restore one")
    scrub.add_argument("--restore", metavar="IMAGE_ID", help="put a pending_delete image "
                                                             "back to active")
    _add_common(scrub)
    reap = sub.add_parser("reap", help="reclaim unreferenced chunks and compact segments "
                                       "(of a stopped node; a running node reaps on its own)")
    reap.add_argument("--grace", type=float, help="seconds an unreferenced chunk survives "
                                                  "(default: reaper_grace)")
    _add_common(reap)
    return parser


def _load(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config, data_dir=args.data_dir, bind=getattr(args, "bind", None),
                           log_format=getattr(args, "log_format", None), env=os.environ,
                           workers=getattr(args, "workers", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from tessera.http.main import run_node

    cfg = _load(args)
    attach = None
    if cfg.cluster is not None:       # a cluster member: replication runs beside the API
        from functools import partial

        from tessera.replication.node import attach as attach_cluster

        cfg.cluster.read_key()        # a missing or short key is a setup error (exit 2)
        attach = partial(attach_cluster, cfg.cluster)
    # systemd (Type=notify) names its readiness socket here; read once, passed down.
    return run_node(cfg, notify_socket=os.environ.get("NOTIFY_SOCKET") or None, attach=attach)


def cmd_cluster(args: argparse.Namespace) -> int:
    """`tessera cluster keygen [FILE]`: a new random cluster key (hex), mode 0600."""
    key = os.urandom(32).hex() + "\n"
    if args.file is None:
        print(key, end="")
        return 0
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"tessera: {args.file} exists; not overwriting a cluster key", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as f:
        f.write(key)
    print(f"tessera: wrote a cluster key to {args.file}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.file)       # ConfigError -> exit 2 with the reason
    print(f"# {args.file}: OK. Effective configuration:")
    print(config_mod.render(cfg), end="")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from tessera.engine.fsck import collect_stats

    stats = collect_stats(_load(args).engine)
    if args.json:
        print(json.dumps(stats, sort_keys=True))
    else:
        for key, value in sorted(stats.items()):
            print(f"{key:>16}  {value}")
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    from tessera.engine.fsck import run_fsck

    report = run_fsck(_load(args).engine, repair=args.repair)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        print(report.render())
    return 0 if report.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    if not args.url and args.config is not None:
        cfg = _load(args)
        if cfg.cluster is not None:       # the cluster view: every node's peer status
            from tessera.replication.status import cluster_status, render

            print(render(cluster_status(cfg.cluster), as_json=args.json))
            return 0
    from tessera.client import status
    from tessera.client.api import ClientError, Endpoint

    if args.url:
        try:
            doc = status.from_node(Endpoint(args.url, args.token))
        except ClientError as exc:
            print(f"tessera: {exc}", file=sys.stderr)
            return 1
    else:
        from tessera.engine.fsck import collect_stats

        cfg = _load(args).engine
        doc = status.from_stats(collect_stats(cfg), str(cfg.data_dir))
    print(status.render(doc, as_json=args.json))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from tessera.client.commands import run_image

    return run_image(args)


def cmd_metadefs(args: argparse.Namespace) -> int:
    from tessera.engine.errors import InvalidInput
    from tessera.engine.metadefs_files import run_export, run_load

    cfg = _load(args).engine
    try:
        if args.metadefs_command == "load":
            outcome = run_load(cfg, args.dir)
            for what, names in outcome.items():
                print(f"{what}: {len(names)}" + (f" ({', '.join(names)})" if names else ""))
        else:
            for path in run_export(cfg, args.dir):
                print(path)
    except InvalidInput as exc:
        print(f"tessera: {exc.message}", file=sys.stderr)
        return 1
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    from tessera.engine.errors import TesseraError
    from tessera.engine.processes import run_offline

    name = {"cache": {"prune": "cache_pruner", "clean": "cache_cleaner",
                      "prefetch": "prefetcher"}.get(getattr(args, "cache_command", "")),
            "scrub": "scrubber", "reap": "reaper"}[args.command]
    try:
        out = run_offline(_load(args).engine, name, restore=getattr(args, "restore", None),
                          grace=getattr(args, "grace", None))
    except TesseraError as exc:
        print(f"tessera: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(out, sort_keys=True, default=str))
    return 0


COMMANDS = {"serve": cmd_serve, "stats": cmd_stats, "fsck": cmd_fsck, "metadefs": cmd_metadefs,
            "config": cmd_config, "status": cmd_status, "cluster": cmd_cluster, "image": cmd_image,
            "cache": cmd_process, "scrub": cmd_process, "reap": cmd_process}


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    client_defaults = {"url": env.get("TESSERA_URL") or env.get("OS_IMAGE_URL"),
                       "token": env.get("OS_AUTH_TOKEN")}
    args = build_parser(client_defaults).parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except config_mod.ConfigError as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
