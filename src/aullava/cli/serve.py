"""`aullava serve`: the model behind a local web page and HTTP API (see `aullava.serve.app`)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import warnings

from aullava.cli.checks import (EXIT_OK, UsageError, check_device, check_model_dir, megabytes, port, positive_int,
                               positive_number)


def add_commands(commands, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="a local web page and HTTP API for AU recognition",
                                description=(
        "Loads the model once and serves http://HOST:PORT/ : a page where you drop a photo and see its faces and "
        "AU values, POST /predict (multipart field 'file' → JSON rows as in the predict table) and GET /health. "
        "Requests are answered one at a time, photos first (a video gives way between chunks of 4 frames); videos over "
        "--max-video-seconds or --max-video-frames are refused (413); a request whose client disconnects stops. "
        "Ctrl+C stops it."))
    serve.add_argument("--model", help="checkpoint directory (default: the shipped default model)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this computer only; the server has no login)")
    serve.add_argument("--port", type=port, default=8000, help="TCP port (default 8000)")
    serve.add_argument("--max-upload-mb", type=megabytes, default=20.0,
                       help="largest upload accepted, in MB (default 20); larger ones get HTTP 413")
    serve.add_argument("--max-video-seconds", type=positive_number, default=60.0,
                       help="longest video accepted, in seconds (default 60); longer ones get HTTP 413")
    serve.add_argument("--max-video-frames", type=positive_int, default=900,
                       help="most frames a video may have (default 900: 30 s at 30 fps); more get HTTP 413")
    serve.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    serve.set_defaults(func=serve_command)


def check_listen(host: str, port: int) -> None:
    """The address must be free now, so a busy port costs a second, not a model load."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UsageError(f"--host {host}: not an address of this computer ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            raise UsageError(f"--host {host} --port {port}: cannot listen there ({err.strerror}); "
                             "choose another --port") from None


def serve_command(args: argparse.Namespace) -> int:
    missing = [m for m in ("starlette", "uvicorn", "multipart") if not _importable(m)]
    if missing:
        raise UsageError(f"aullava serve needs {', '.join(missing)}: pip install starlette uvicorn python-multipart")
    check_model_dir(args.model)
    check_device(args.device)
    check_listen(args.host, args.port)
    import uvicorn

    from aullava.inference import Predictor
    from aullava.serve.app import Service, create_app

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = Predictor(args.model, device=args.device)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    service = Service(predictor, model_name=args.model or "default", max_upload_bytes=int(args.max_upload_mb * 1e6),
                      max_video_seconds=args.max_video_seconds, max_video_frames=args.max_video_frames)
    status = "trained" if predictor.trained else "UNTRAINED (values are meaningless)"
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"# model: {service.model_name} [{status}], AU set: {predictor.model.au_set.name} "
          f"({len(predictor.model.au_set)} AUs)", file=sys.stderr)
    if not _is_loopback(args.host):
        print(f"warning: --host {args.host}: other computers can reach this server, and it has no login",
              file=sys.stderr)
    print(f"serving http://{host}:{args.port}/ (Ctrl+C to stop)", file=sys.stderr, flush=True)
    verbose = getattr(args, "verbose", False)
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level="info" if verbose else "warning",
                access_log=verbose)
    return EXIT_OK


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
